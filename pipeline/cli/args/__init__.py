"""The options of each verb, one light module per verb: ``add_arguments(parser)``.

Nothing here imports torch, onnx or TensorRT (the options come from ``pipeline.core`` and its config
dataclasses), so ``sgformer-trt --help`` and ``sgformer-trt VERB --help`` answer at once; the verb's run part
(``pipeline.cli.<verb>``) and the libraries it needs are imported only when the verb runs.

One vocabulary across verbs (checked over every verb by tests/test_cli_rules.py):
``-o/--output`` the main output (file or folder), ``--images`` a folder, ``--num-images`` a count,
``--img-size`` the input side, ``--report`` a JSON report, ``--onnx`` an input graph, ``--engine`` an engine folder.
"""
