"""Friendly inputs made strict, once, at the public API's edge.

``rnnfast._core`` refuses anything but C-contiguous float32/float64 arrays of one dtype. The public
functions accept array-likes (lists, other float dtypes, non-contiguous views, torch tensors on the
CPU) and convert them here, explicitly. Integer, boolean, complex and object data are refused with a
TypeError: silently turning token ids into floats hides bugs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["compute_dtype", "as_float", "as_optional_float", "as_lengths"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _as_ndarray(name: str, value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array of floats, got {type(value).__name__}") from err


def compute_dtype(name: str, value: Any) -> np.dtype:
    """The dtype a call runs in, from its first array: float32 and float64 stay, float16 becomes
    float32, other real floats float64. Anything else is a TypeError."""
    if type(value) is np.ndarray and value.dtype in _FLOATS:
        return value.dtype
    kind = _as_ndarray(name, value).dtype
    if kind in _FLOATS:
        return kind
    if kind.kind == "f":
        return np.dtype(np.float32) if kind.itemsize < 4 else np.dtype(np.float64)
    raise TypeError(f"{name}: expected a floating-point array (float32 or float64), got dtype {kind}")


def as_float(name: str, value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` as a C-contiguous, aligned array of ``dtype`` (no copy when it already is one)."""
    # The common case first, in a fraction of np.require's time (it matters for single-step cells).
    if type(value) is np.ndarray and value.dtype == dtype:
        flags = value.flags
        if flags.c_contiguous and flags.aligned:
            return value
    a = _as_ndarray(name, value)
    if a.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array, got dtype {a.dtype}")
    return np.require(a, dtype=dtype, requirements=["C", "A"])


def as_optional_float(name: str, value: Any, dtype: np.dtype) -> np.ndarray | None:
    return None if value is None else as_float(name, value, dtype)


def as_lengths(value: Any) -> np.ndarray | None:
    """Sequence lengths as a C-contiguous int64 array; None stays None."""
    if value is None:
        return None
    a = _as_ndarray("lengths", value)
    if a.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected an array of integers, got dtype {a.dtype}")
    return np.require(a, dtype=np.int64, requirements=["C", "A"])
