"""Adapters to the runtimes: TensorRT / TensorRT-RTX (tensorrt: API differences, GPU probing, the process
re-exec), onnxruntime with the SGFormerIAM op (onnxruntime), the engine runtime (engine) and the runners with one
protocol (runners). No other module imports tensorrt, onnxruntime sessions or pycuda directly.
"""
