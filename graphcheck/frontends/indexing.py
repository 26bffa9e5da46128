"""Normalised descriptions of basic indexing (``x[:, 1:]``, ``narrow``, ``select``, ``slice``) and flag arguments.

Every frontend records an indexing op with the same ``index`` attribute, so the
index-range analysis never parses frontend-specific arguments: one entry per dimension of
the indexed tensor, ``(out_dim, start, stop, step)`` with non-negative, clipped bounds;
``out_dim`` is None for a dimension the op removes (an integer index, ``select``).
"""

from __future__ import annotations

from typing import Any

import torch


def _full(size: int, out_dim: int) -> tuple:
    return (out_dim, 0, size, 1)


def _getitem(shape: tuple, key: Any) -> list | None:
    keys = list(key) if isinstance(key, tuple) else [key]
    if any(k is not Ellipsis and k is not None and not isinstance(k, (int, slice)) or isinstance(k, bool)
           for k in keys):
        return None                                   # advanced indexing: tensors, lists, bools
    consuming = sum(1 for k in keys if k is not None and k is not Ellipsis)
    if keys.count(Ellipsis) > 1 or consuming > len(shape):
        return None
    if Ellipsis in keys:
        at = keys.index(Ellipsis)
        keys[at:at + 1] = [slice(None)] * (len(shape) - consuming)
    else:
        keys += [slice(None)] * (len(shape) - consuming)
    entries, in_dim, out_dim = [], 0, 0
    for k in keys:
        if k is None:
            out_dim += 1
            continue
        size = shape[in_dim]
        if isinstance(k, int):
            position = k + size if k < 0 else k
            entries.append((None, position, position + 1, 1))
        else:
            if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in (k.start, k.stop, k.step)):
                return None
            positions = range(size)[k]
            entries.append((out_dim, positions.start, max(positions.start, positions.stop), positions.step))
            out_dim += 1
        in_dim += 1
    return entries


def describe_index(name: str, args: tuple, kwargs: dict) -> list | None:
    """The ``index`` attribute of an indexing op on a tensor, or None (not basic indexing)."""
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    shape = tuple(int(s) for s in args[0].shape)
    rest = list(args[1:])
    try:
        if name in ("getitem", "__getitem__") and len(rest) == 1:
            return _getitem(shape, rest[0])
        if name in ("select", "narrow", "slice"):
            names = {"select": ("dim", "index"), "narrow": ("dim", "start", "length"),
                     "slice": ("dim", "start", "end", "step")}[name]
            values = dict(zip(names, rest)) | {k: v for k, v in kwargs.items() if k in names}
            if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values.values()):
                return None
            dim = values.get("dim") or 0
            dim = dim + len(shape) if dim < 0 else dim
            key: list = [slice(None)] * dim
            if name == "select":
                key.append(values["index"])
            elif name == "narrow":
                start = values["start"] + shape[dim] if values["start"] < 0 else values["start"]
                key.append(slice(start, start + values["length"]))
            else:
                key.append(slice(values.get("start"), values.get("end"), values.get("step")))
            return _getitem(shape, tuple(key))
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    return None


def bool_flags(args: tuple, kwargs: dict) -> list[bool]:
    """Literal booleans among the arguments, in order (``dropout(x, p, training)``)."""
    return [a for a in list(args) + list(kwargs.values()) if isinstance(a, bool)]


def describe_piece(base_shape: tuple, pieces: Any, position: Any) -> list | None:
    """The ``index`` of ``split(x, ...)[i]`` / ``chunk(x, ...)[i]`` relative to ``x``: the pieces
    tile one dimension of ``x`` in order."""
    if not isinstance(pieces, (tuple, list)) or not isinstance(position, int) or isinstance(position, bool) \
            or not all(isinstance(p, torch.Tensor) and p.dim() == len(base_shape) for p in pieces) \
            or not -len(pieces) <= position < len(pieces):
        return None
    base_shape = tuple(int(s) for s in base_shape)
    differing = {d for p in pieces for d in range(len(base_shape)) if int(p.shape[d]) != base_shape[d]}
    if len(differing) > 1:
        return None
    dim = differing.pop() if differing else 0
    sizes = [int(p.shape[dim]) for p in pieces]
    if sum(sizes) != base_shape[dim]:
        return None
    position %= len(pieces)
    start = sum(sizes[:position])
    return [(d, start, start + sizes[position], 1) if d == dim else _full(size, d)
            for d, size in enumerate(base_shape)]
