"""One module per compilation stage, each a library function with explicit types: export (nn.Module ->
ModelProto), rewrite (ModelProto -> ModelProto), build (ModelProto -> engine folder), verify (runner + reference ->
ParityReport) and compare (the one logit comparison). ``calibration/`` is the precision stage beside these.
"""
