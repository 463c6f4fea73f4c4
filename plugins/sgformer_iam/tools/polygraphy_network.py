"""Polygraphy network script: load libsgformer_plugins.so through the plugin registry, then parse the ONNX.

TensorRT-RTX registers plugin libraries only through ``IPluginRegistry::loadLibrary``, and Polygraphy's
``--plugins`` just calls ``ctypes.CDLL``, so with RTX (``POLYGRAPHY_USE_TENSORRT_RTX=1``) pass the graph as
this script instead (works with full TensorRT too)::

    SGFORMER_IAM_PLUGIN=build/plugins/libsgformer_plugins.so SGFORMER_IAM_ONNX=model.iam.onnx \\
    POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy convert plugins/sgformer_iam/tools/polygraphy_network.py \\
        --model-type trt-network-script -o model.engine --trt-min-shapes ... --trt-max-shapes ...

Polygraphy calls ``load_network()`` with no arguments, hence the two environment variables.
"""
from __future__ import annotations

import os

from polygraphy.backend.trt import NetworkFromOnnxPath
from polygraphy.mod.trt_importer import lazy_import_trt

trt = lazy_import_trt()

PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE = "SGFormerIAM", "1", ""


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"polygraphy_network.py: set {name} (see the module docstring)")
    return value


def load_network():
    """(builder, network, parser) for the ONNX in SGFORMER_IAM_ONNX, with the plugin library loaded."""
    registry = trt.get_plugin_registry()
    if registry.get_creator(PLUGIN_NAME, PLUGIN_VERSION, PLUGIN_NAMESPACE) is None:
        library = _required("SGFORMER_IAM_PLUGIN")
        if registry.load_library(library) is None:
            raise SystemExit(f"polygraphy_network.py: the plugin registry could not load {library}")
    return NetworkFromOnnxPath(_required("SGFORMER_IAM_ONNX"))()
