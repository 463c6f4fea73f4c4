"""What users run on top of the stages: bench, explain, evaluate, package, classify (the ``run`` verb).
Apps call ``pipeline.flow.run_pipeline`` or the stage functions; they never re-sequence export -> rewrite.
"""
