"""The IAM custom op's identity, defined once on the Python side.

The same strings are defined in ``plugins/sgformer_iam/sgformerIamFields.h``; ``tests/test_plugin_spec.py``
checks that both lists agree. The ONNX op_type, the TensorRT plugin name and the creator name are one string.
"""
from __future__ import annotations

PLUGIN_NAME = "SGFormerIAM"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
#: Largest batch the kernel takes (``kMAX_BATCH`` in plugins/sgformer_iam/sgformerIamKernel.h; a test reads it
#: from there): ``MAX_BATCH`` / ``--max-batch`` beyond it is refused before any build.
MAX_BATCH = 65535
#: ONNX domain used in the artifacts. TensorRT's ONNX parser maps an unknown op of any domain to a plugin by
#: op_type; onnxruntime-extensions only serves Python ops in ``ai.onnx.contrib`` (the CPU runner swaps it).
ONNX_DOMAIN = "trt.plugins"
ORT_CONTRIB_DOMAIN = "ai.onnx.contrib"

#: Attribute (plugin field) names, in serialization order.
ATTR_HEIGHT = "height"
ATTR_WIDTH = "width"
ATTR_GROUP_SIZES = "group_sizes"
ATTR_TIER_SIZES = "tier_sizes"
ATTRIBUTES = (ATTR_HEIGHT, ATTR_WIDTH, ATTR_GROUP_SIZES, ATTR_TIER_SIZES)

#: Input and output tensor roles, in order.
INPUTS = ("tokens", "importance", "agg_weight", "agg_bias")
OUTPUTS = ("seq_row", "seq_col")
