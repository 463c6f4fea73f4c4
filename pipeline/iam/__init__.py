"""The SGFormerIAM op in one place: its definition and reference implementation (reference), the one layout class
(layout, torch-free), the plugin's identity and attribute names (spec), the C++ host reference over ctypes (host),
the PyTorch custom op ``sgformer::iam`` (torch_op), and the loader of our native libraries with their one ctypes
signature table and call struct (native) and its ELF check (elf). Imports only ``pipeline.core`` and
``pipeline.graph``.
"""
