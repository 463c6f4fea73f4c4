"""Reading official SG-Former checkpoints safely and fitting them to a model.

Accepted layouts (docs/sgformer.md §10):
- the official training checkpoint: a dict with ``state_dict`` and ``state_dict_ema`` (EMA is what
  upstream evaluates, so it is preferred), plus ``optimizer``, ``args`` (an ``argparse.Namespace``),
  ``amp_scaler``, ``epoch``, ``metric``, ...;
- a dict with ``model`` (common in re-saved checkpoints);
- a bare state_dict;
- any of these with a ``module.`` prefix on every key (DataParallel / DDP).

Files are unpickled with ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` added to the
allow list, so a checkpoint cannot run code while loading. Other objects are refused with a message
saying how to opt in (``trust_pickle=True`` / ``--trust-checkpoint``) for a file the user trusts; bytes that are
not a zip, a pickle or a ``.safetensors`` file are called corrupt (the opt-in cannot help there). ``.safetensors``
files (tensors only, no code) are read with the ``safetensors`` package. Weights are checked finite at load, and a
fine-tuned head with another class count resizes the model's head (its num_classes is then the checkpoint's).
"""
from __future__ import annotations

import argparse
import logging
import pickle
import pickletools
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F

from pipeline.core.variants import VARIANTS
from pipeline.core.errors import CheckpointError

__all__ = ["read_checkpoint", "sniff_format", "check_finite", "fit_head", "select_state_dict", "checkpoint_filter_fn", "load_weights", "guess_variant"]

_logger = logging.getLogger("pipeline.model.checkpoint")

#: Preference order of the weight sets inside a checkpoint dict.
STATE_DICT_KEYS = ("state_dict_ema", "state_dict", "model_ema", "model")


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> object:
    """Read ``path`` on the CPU: a ``.safetensors`` file (tensors only), or a PyTorch file (zip or pickle) unpickled with
    only tensors, containers, numbers and ``argparse.Namespace`` unless trusted. Anything else is corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); check the path")
    kind = sniff_format(path)
    if kind == "safetensors":
        return _read_safetensors(path)
    if kind == "unknown":
        what = "a .safetensors file" if path.suffix == ".safetensors" else "a PyTorch checkpoint (zip or pickle)"
        raise CheckpointError(f"checkpoint {path} is corrupt: its first bytes are not those of {what}; download or "
                              f"copy it again")
    try:
        if trust_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _unpickler_detail(exc)
        unsafe = "Unsupported global" in detail or (kind == "pickle" and _pickle_parses(path))
        if trust_pickle or not unsafe:  # the opt-in cannot help: the bytes are bad
            raise _corrupt(path, exc) from None
        raise CheckpointError(
            f"checkpoint {path} holds pickled objects that are not on the safe list (tensors, containers, numbers, "
            f"argparse.Namespace){detail}. If you trust this file, load it with trust_pickle=True "
            f"(CLI: --trust-checkpoint); loading an untrusted pickle can run arbitrary code"
        ) from None
    except Exception as exc:  # zip reader, EOF, index errors on truncated or foreign files
        raise _corrupt(path, exc) from None


def _pickle_parses(path: Path) -> bool:
    """True when ``path`` is a well-formed pickle opcode stream (read with pickletools, nothing is executed)."""
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):
                pass
    except Exception:  # ValueError on unknown opcodes, truncated arguments
        return False
    return True


def _corrupt(path: Path, exc: BaseException) -> CheckpointError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
    return CheckpointError(
        f"checkpoint {path} cannot be read ({type(exc).__name__}: {detail[:200]}); the file is truncated, corrupt or "
        f"not a PyTorch checkpoint: download or copy it again"
    )


def sniff_format(path: Path) -> str:
    """"zip" (torch.save), "pickle" (legacy torch.save / pickle protocol 2-5), "safetensors" or "unknown", by content."""
    with open(path, "rb") as f:
        head = f.read(9)
    size = path.stat().st_size
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    return "unknown"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise CheckpointError(f"checkpoint {path} is a .safetensors file and reading it needs the safetensors package "
                              f"(pip install safetensors==0.8.0, a dependency in pyproject.toml)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, header JSON errors, short data
        raise CheckpointError(f"checkpoint {path} is a corrupt .safetensors file ({type(exc).__name__}: "
                              f"{str(exc).strip()[:200]}); download or copy it again") from None


def _unpickler_detail(exc: Exception) -> str:
    """The specific reason from torch's long weights_only message (e.g. 'Unsupported global: GLOBAL x.Y')."""
    text = str(exc)
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, flags=re.S)
    return f": {' '.join(m.group(1).split())}" if m else ""


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def select_state_dict(obj: object, source: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """Pick the weight set from an unpickled checkpoint; returns (state_dict, which key was used)."""
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return dict(obj[key]), key
        if _is_state_dict(obj):
            return dict(obj), "bare state_dict"
        keys = ", ".join(repr(k) for k in list(obj)[:8])
        raise CheckpointError(
            f"{source} is a dict without model weights (keys: {keys}); expected an official SG-Former checkpoint "
            f"(with 'state_dict_ema' / 'state_dict'), a dict with 'model', or a bare state_dict of tensors"
        )
    raise CheckpointError(
        f"{source} holds a {type(obj).__name__}, not a checkpoint; expected a dict of tensors or an official "
        f"SG-Former training checkpoint"
    )


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Pure remap of checkpoint keys to ``model``: strips ``module.``, resamples ``pos_embed`` from the checkpoint's
    (square) grid to the model's ``pos_grid`` (rows x cols, (H/4) x (W/4)), and drops the classifier (``head.*``)
    for a backbone built without one (``features_only``, as timm's feature models do)."""
    out = {}
    model_keys = set(model.state_dict())
    for k, v in state_dict.items():
        k = k[len("module."):] if k.startswith("module.") else k
        if k.startswith("head.") and getattr(model, "features_only", False) and k not in model_keys:
            continue
        out[k] = v
    pos = out.get("pos_embed")
    target = getattr(model, "pos_embed", None)
    if isinstance(pos, torch.Tensor) and target is not None and pos.ndim == 3 and pos.shape != target.shape:
        src_side = int(round(pos.shape[1] ** 0.5))
        side = int(round(target.shape[1] ** 0.5))
        rows, cols = tuple(getattr(model, "pos_grid", (side, side)))
        if src_side * src_side == pos.shape[1] and pos.shape[2] == target.shape[2] and rows * cols == target.shape[1]:
            grid = pos.reshape(1, src_side, src_side, -1).permute(0, 3, 1, 2).float()
            grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
            out["pos_embed"] = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1).to(pos.dtype)
            _logger.info("pos_embed resampled from a %dx%d to a %dx%d token grid (bicubic)", src_side, src_side,
                         rows, cols)
    return out


def guess_variant(state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """Name the registered variant whose block counts and widths match these keys, if any."""
    depths = []
    for stage in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state_dict if k.startswith(f"block{stage}.")}
        depths.append(max(idx) + 1 if idx else 0)
    w = state_dict.get("norm1.weight")
    width = int(w.shape[0]) if isinstance(w, torch.Tensor) else None
    for name, args in VARIANTS.items():
        if tuple(args["depths"]) == tuple(depths) and args["embed_dims"][0] == width:
            return name
    return None


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse NaN/Inf weights by tensor name, before a model holds them (they would export a NaN graph)."""
    bad = []
    for k, v in state_dict.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad.append(f"{k} ({int(torch.isnan(v).sum())} NaN, {int(torch.isinf(v).sum())} Inf)")
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"{source} has non-finite weights: {', '.join(bad[:3])}{more}; the checkpoint is damaged "
                              f"(or was saved after training diverged): use another checkpoint")


def fit_head(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """A fine-tuned head with another class count: give ``model`` a head of the checkpoint's size (num_classes)."""
    w = state_dict.get("head.weight")
    head = getattr(model, "head", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or not isinstance(head, torch.nn.Linear):
        return
    classes, width = int(w.shape[0]), int(w.shape[1])
    if classes == head.out_features or width != head.in_features:
        return
    model.head = torch.nn.Linear(width, classes)
    model.num_classes = classes
    _logger.info("%s has a %d-class head: the model's head is resized from %d classes", source, classes, head.out_features)


def load_weights(
    model: torch.nn.Module, path: str | Path, variant: str | None = None, trust_pickle: bool = False
) -> str:
    """Load a checkpoint file into ``model`` strictly (its head resized to the checkpoint's num_classes). Returns
    which weight set was used."""
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    state_dict, used = select_state_dict(obj, source=f"checkpoint {path}")
    state_dict = checkpoint_filter_fn(state_dict, model)
    check_finite(state_dict, f"checkpoint {path} ({used})")
    fit_head(model, state_dict, f"checkpoint {path}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        found = guess_variant(state_dict)
        hint = (
            f"it looks like variant '{found}', not '{variant}': pass the matching variant"
            if found and found != variant
            else "is it an SG-Former checkpoint?"
        )
        raise CheckpointError(
            f"checkpoint {path} ({used}) does not fit variant {variant or '?'}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]}); {hint}"
        )
    bad = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items() if state_dict[k].shape != v.shape]
    if bad:
        k, got, want = bad[0]
        found = guess_variant(state_dict)
        hint = f" it looks like variant '{found}'." if found and found != variant else ""
        raise CheckpointError(
            f"checkpoint {path} ({used}): {len(bad)} tensors have the wrong shape, e.g. {k} is {list(got)}, the model "
            f"expects {list(want)}.{hint} Check the variant"
        )
    model.load_state_dict(state_dict, strict=True)
    _logger.info("loaded %s weights from %s (%d tensors)", used, path, len(state_dict))
    return used
