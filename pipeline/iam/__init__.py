"""The SGFormerIAM op in one place: its definition and reference implementation (reference), the plugin's
identity and attribute names (spec), the C++ host reference over ctypes (host), the PyTorch custom op ``sgformer::iam``
(torch_op), and the loader and ELF check of our native libraries (native, elf). Imports only ``pipeline.core`` and
``pipeline.graph``.
"""
