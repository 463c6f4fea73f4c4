"""Child-process script for test_trt_rtx_build.py: build a TensorRT-RTX engine from an ONNX file holding
SGFormerIAM nodes, with the plugin library loaded through the registry. Prints one JSON line.

Runs in its own process because LD_LIBRARY_PATH (the unversioned libtensorrt_rtx.so symlink, see
pipeline/rtx_library.ensure_rtx_parser_library) must be set before the process starts.

Usage: python trt_rtx_build_probe.py PLUGIN_SO ONNX_PATH MAX_BATCH
"""
from __future__ import annotations

import json
import sys
import time


def main() -> int:
    plugin_path, onnx_path, max_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    import tensorrt_rtx as trt

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg) -> None:  # noqa: ANN001 - TensorRT's signature
            self.messages.append(f"{severity.name}: {msg}")

    logger = CollectingLogger()
    result: dict = {"trt_version": trt.__version__, "library_loaded": False, "creator_found": False,
                    "parsed": False, "engine_bytes": 0}
    builder = trt.Builder(logger)
    registry = builder.get_plugin_registry()
    try:
        registry.load_library(plugin_path)
        result["library_loaded"] = True
    except Exception as exc:  # report, the test decides
        result["load_error"] = str(exc)
    creator = registry.get_creator("SGFormerIAM", "1", "")
    result["creator_found"] = creator is not None

    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        result["parsed"] = bool(parser.parse(f.read()))
    result["parser_errors"] = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if result["parsed"]:
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = list(tensor.shape)
            if dims and dims[0] == -1:
                lo, opt, hi = ([b] + dims[1:] for b in (1, max(1, max_batch // 2), max_batch))
                profile.set_shape(tensor.name, lo, opt, hi)
        config.add_optimization_profile(profile)
        start = time.perf_counter()
        engine = builder.build_serialized_network(network, config)
        result["build_s"] = round(time.perf_counter() - start, 2)
        result["engine_bytes"] = 0 if engine is None else int(engine.nbytes)
        result["outputs"] = [
            {"name": network.get_output(i).name, "shape": list(network.get_output(i).shape),
             "dtype": str(network.get_output(i).dtype)} for i in range(network.num_outputs)]
    result["log"] = logger.messages[-400:]
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
