"""NumPy semantics of the ONNX ops a significance region (and its shape arithmetic) is made of.

The rewrite reads what a region computes by executing it: ``evaluate(node, inputs)`` runs one node on NumPy
arrays. Only data movement, shape arithmetic and the affine merge are here; an op outside ``SUPPORTED`` ends a
region (``UnsupportedOp``), it is never approximated.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import onnx_graphsurgeon as gs
from onnx import helper

__all__ = ["SUPPORTED", "LAYOUT_OPS", "UnsupportedOp", "evaluate", "attr_value"]

#: Ops that only move data around (no arithmetic): chains of them relate the two token orders.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten"})


class UnsupportedOp(Exception):
    """``evaluate`` was asked to run an op it has no semantics for, or inputs it cannot take."""


def attr_value(node: gs.Node, name: str, default=None):
    value = node.attrs.get(name, default)
    return default if value is None else value


def _axes(node: gs.Node, inputs: Sequence[Optional[np.ndarray]], position: int) -> Optional[list[int]]:
    """Axes from the input at ``position`` (opset >= 13) or the ``axes`` attribute (older opsets)."""
    if len(inputs) > position and inputs[position] is not None:
        return [int(a) for a in np.ravel(inputs[position])]
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _reshape(node, x, shape):
    shape = [int(s) for s in np.ravel(shape)]
    if not attr_value(node, "allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    try:
        return x.reshape(shape)
    except ValueError as exc:
        raise UnsupportedOp(f"Reshape '{node.name}' to {shape} does not fit {list(x.shape)}") from exc


def _squeeze(node, x, *rest):
    axes = _axes(node, (x,) + rest, 1)
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def _unsqueeze(node, x, *rest):
    axes = _axes(node, (x,) + rest, 1) or []
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _slice(node, x, *rest):
    if "starts" in node.attrs:  # opset < 10
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes, steps = node.attrs.get("axes"), None
    else:
        starts, ends = rest[0], rest[1]
        axes = rest[2] if len(rest) > 2 else None
        steps = rest[3] if len(rest) > 3 else None
    starts, ends = np.ravel(starts), np.ravel(ends)
    axes = np.arange(len(starts)) if axes is None else np.ravel(axes)
    steps = np.ones(len(starts), np.int64) if steps is None else np.ravel(steps)
    index = [slice(None)] * x.ndim
    big = np.iinfo(np.int64).max
    for s, e, a, st in zip(starts, ends, axes, steps):
        e = int(e)
        if st < 0 and e < -x.shape[int(a) % x.ndim]:
            e = None  # "before the first element"
        index[int(a) % x.ndim] = slice(int(s), None if e is None else min(e, big), int(st))
    return x[tuple(index)]


def _split(node, x, *rest):
    axis = int(attr_value(node, "axis", 0)) % x.ndim
    sizes = rest[0] if rest and rest[0] is not None else node.attrs.get("split")
    if sizes is None:
        parts = len(node.outputs)
        return tuple(np.array_split(x, parts, axis=axis))
    bounds = np.cumsum([int(s) for s in np.ravel(sizes)])[:-1]
    return tuple(np.split(x, bounds, axis=axis))


def _gather(node, x, idx):
    return np.take(x, idx.astype(np.int64), axis=int(attr_value(node, "axis", 0)))


def _gather_elements(node, x, idx):
    axis = int(attr_value(node, "axis", 0)) % x.ndim
    idx = idx.astype(np.int64)
    return np.take_along_axis(x, np.where(idx < 0, idx + x.shape[axis], idx), axis=axis)


def _gemm(node, a, b, c=None):
    a = a.T if attr_value(node, "transA", 0) else a
    b = b.T if attr_value(node, "transB", 0) else b
    out = float(attr_value(node, "alpha", 1.0)) * (a @ b)
    return out if c is None else out + float(attr_value(node, "beta", 1.0)) * c


def _div(node, a, b):
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.trunc(np.asarray(a, np.float64) / b).astype(np.result_type(a, b))
    return a / b


def _shape_of_expand(node, x, shape):
    return x * np.ones([int(s) for s in np.ravel(shape)], dtype=x.dtype)


def _constant_of_shape(node, shape):
    value = node.attrs.get("value")
    fill = np.asarray(value.values).ravel()[0] if value is not None else np.float32(0)
    return np.full([int(s) for s in np.ravel(shape)], fill)


def _range(node, start, limit, delta):
    return np.arange(start.item(), limit.item(), delta.item()).astype(np.result_type(start, limit, delta))


def _concat(node, *xs):
    return np.concatenate([np.asarray(x) for x in xs], axis=int(attr_value(node, "axis", 0)))


def _cast(node, x):
    return x.astype(helper.tensor_dtype_to_np_dtype(int(node.attrs["to"])))


def _reduce(fn):
    def run(node, x, *rest):
        axes = _axes(node, (x,) + rest, 1)
        if axes is None and attr_value(node, "noop_with_empty_axes", 0):
            return x
        axes = None if not axes else tuple(a % x.ndim for a in axes)
        return fn(x, axis=axes, keepdims=bool(attr_value(node, "keepdims", 1)))
    return run


def _dequantize(node, q, scale, zero=None):
    zero = np.zeros((), np.float32) if zero is None else zero
    axis = int(attr_value(node, "axis", 1))
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)


_OPS: dict[str, Callable] = {
    "Identity": lambda node, x: x,
    "Reshape": _reshape,
    "Transpose": lambda node, x: np.transpose(x, None if node.attrs.get("perm") is None
                                              else [int(p) for p in node.attrs["perm"]]),
    "Flatten": lambda node, x: x.reshape(int(np.prod(x.shape[:int(attr_value(node, "axis", 1)) % max(x.ndim, 1)])), -1),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Slice": _slice,
    "Split": _split,
    "Concat": _concat,
    "Expand": _shape_of_expand,
    "Tile": lambda node, x, reps: np.tile(x, [int(r) for r in np.ravel(reps)]),
    "Gather": _gather,
    "GatherElements": _gather_elements,
    "Cast": _cast,
    "Shape": lambda node, x: np.asarray(x.shape, np.int64)[int(attr_value(node, "start", 0)):
                                                          node.attrs.get("end", None)],
    "Size": lambda node, x: np.asarray(x.size, np.int64),
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "MatMul": lambda node, a, b: np.matmul(a, b),
    "Gemm": _gemm,
    "Add": lambda node, a, b: a + b,
    "Sub": lambda node, a, b: a - b,
    "Mul": lambda node, a, b: a * b,
    "Div": _div,
    "Mod": lambda node, a, b: np.fmod(a, b) if attr_value(node, "fmod", 0) else np.mod(a, b),
    "Neg": lambda node, x: -x,
    "Abs": lambda node, x: np.abs(x),
    "Floor": lambda node, x: np.floor(x),
    "Ceil": lambda node, x: np.ceil(x),
    "Sqrt": lambda node, x: np.sqrt(x),
    "Min": lambda node, *xs: np.minimum.reduce(np.broadcast_arrays(*xs)),
    "Max": lambda node, *xs: np.maximum.reduce(np.broadcast_arrays(*xs)),
    "Equal": lambda node, a, b: np.equal(a, b),
    "Less": lambda node, a, b: np.less(a, b),
    "Greater": lambda node, a, b: np.greater(a, b),
    "Not": lambda node, x: np.logical_not(x),
    "Where": lambda node, c, a, b: np.where(c, a, b),
    "ReduceProd": _reduce(np.prod),
    "ReduceSum": _reduce(np.sum),
    "DequantizeLinear": _dequantize,
}
#: Every op ``evaluate`` knows.
SUPPORTED = frozenset(_OPS)


def evaluate(node: gs.Node, inputs: Sequence[Optional[np.ndarray]]) -> list[np.ndarray]:
    """Run ``node`` on ``inputs`` (None for an omitted optional input); returns one array per output."""
    fn = _OPS.get(node.op)
    if fn is None:
        raise UnsupportedOp(f"{node.op} '{node.name}'")
    args = list(inputs)
    while args and args[-1] is None:
        args.pop()
    try:
        out = fn(node, *args)
    except UnsupportedOp:
        raise
    except (ValueError, TypeError, IndexError) as exc:
        raise UnsupportedOp(f"{node.op} '{node.name}' cannot run on inputs of shapes "
                            f"{[None if a is None else list(np.shape(a)) for a in args]}: {exc}") from exc
    outs = list(out) if isinstance(out, tuple) else [out]
    return [np.asarray(o) for o in outs]
