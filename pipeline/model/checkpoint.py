"""Reading official SG-Former checkpoints safely and fitting them to a model.

Accepted layouts (docs/sgformer.md §10):
- the official training checkpoint: a dict with ``state_dict`` and ``state_dict_ema`` (EMA is what
  upstream evaluates, so it is preferred), plus ``optimizer``, ``args`` (an ``argparse.Namespace``),
  ``amp_scaler``, ``epoch``, ``metric``, ...;
- a dict with ``model`` (common in re-saved checkpoints);
- a bare state_dict;
- any of these with a ``module.`` prefix on every key (DataParallel / DDP).

Files are unpickled with ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` added to the
allow list, so a checkpoint cannot run code while loading. Anything else is refused with a message
saying how to opt in (``trust_pickle=True`` / ``--trust-checkpoint``) for a file the user trusts.
"""
from __future__ import annotations

import argparse
import logging
import pickle
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F

from pipeline.core.variants import VARIANTS
from pipeline.core.errors import CheckpointError

__all__ = ["read_checkpoint", "select_state_dict", "checkpoint_filter_fn", "load_weights", "guess_variant"]

_logger = logging.getLogger("pipeline.model.checkpoint")

#: Preference order of the weight sets inside a checkpoint dict.
STATE_DICT_KEYS = ("state_dict_ema", "state_dict", "model_ema", "model")


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> object:
    """Unpickle ``path`` on the CPU. Only tensors, containers, numbers and ``argparse.Namespace`` unless trusted."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); check the path")
    try:
        if trust_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds pickled objects that are not on the safe list (tensors, containers, numbers, "
            f"argparse.Namespace){_unpickler_detail(exc)}. If you trust this file, load it with trust_pickle=True "
            f"(CLI: --trust-checkpoint); loading an untrusted pickle can run arbitrary code"
        ) from None
    except Exception as exc:  # zip reader, EOF, index errors on truncated or foreign files
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {detail}); the file is truncated, corrupt or "
            f"not a PyTorch checkpoint: download or copy it again"
        ) from None


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


def load_weights(
    model: torch.nn.Module, path: str | Path, variant: str | None = None, trust_pickle: bool = False
) -> str:
    """Load a checkpoint file into ``model`` strictly. Returns which weight set was used."""
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    state_dict, used = select_state_dict(obj, source=f"checkpoint {path}")
    state_dict = checkpoint_filter_fn(state_dict, model)
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
            f"expects {list(want)}.{hint} Check the variant and num_classes"
        )
    model.load_state_dict(state_dict, strict=True)
    _logger.info("loaded %s weights from %s (%d tensors)", used, path, len(state_dict))
    return used
