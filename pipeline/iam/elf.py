"""Refuse a truncated or damaged shared library before ``ctypes.CDLL`` maps it.

``dlopen`` trusts the ELF headers: a library cut short by an interrupted build or copy still has valid headers, and
the dynamic loader's first touch of a segment past the end of the file kills the process with SIGBUS (no Python
exception, no message). :func:`elf_problem` reads only the headers and checks that every loadable segment and the
section header table lie inside the file, so callers can raise a clear error instead.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional

__all__ = ["elf_problem"]

_PT_LOAD = 1


def elf_problem(path: str | Path) -> Optional[str]:
    """None for a complete ELF shared object, else what is wrong with it (one phrase)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header = f.read(64)
            if len(header) < 16 or header[:4] != b"\x7fELF":
                return "not an ELF file"
            elf64, little = header[4] == 2, header[5] == 1
            if not (header[4] in (1, 2) and header[5] in (1, 2)):
                return "an ELF file with an unknown class or byte order"
            end = "<" if little else ">"
            if elf64:
                if len(header) < 64:
                    return f"truncated: {size} bytes, shorter than its ELF header"
                phoff, shoff = struct.unpack_from(end + "QQ", header, 32)
                phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", header, 54)
            else:
                if len(header) < 52:
                    return f"truncated: {size} bytes, shorter than its ELF header"
                phoff, shoff = struct.unpack_from(end + "II", header, 28)
                phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", header, 42)
            if phoff + phnum * phentsize > size:
                return f"truncated: {size} bytes, its program headers end at byte {phoff + phnum * phentsize}"
            if shnum and shoff + shnum * shentsize > size:
                return f"truncated: {size} bytes, its section headers end at byte {shoff + shnum * shentsize}"
            f.seek(phoff)
            table = f.read(phnum * phentsize)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    for i in range(phnum):
        entry = table[i * phentsize:(i + 1) * phentsize]
        if elf64:
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(end + "IIQQQQ", entry)
        else:
            p_type, p_offset, _vaddr, _paddr, p_filesz = struct.unpack_from(end + "IIIII", entry)
        if p_type == _PT_LOAD and p_offset + p_filesz > size:
            return f"truncated: {size} bytes, segment {i} needs bytes up to {p_offset + p_filesz}"
    return None
