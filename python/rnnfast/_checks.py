"""Argument validation shared by the NumPy reference and the Python layers.

Every failure names the argument, what was expected and what was got, in the form the compiled
module uses too: ``w_hh: expected shape (1024, 256), got (1024, 255)``. Wrong types and dtypes
raise TypeError; wrong shapes and values raise ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

def _format_shape(shape: Sequence[int | str]) -> str:
    items = [str(d) for d in shape]
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def float_dtype(name: str, a: object) -> np.dtype:
    """Return the dtype of ``a`` after checking that it is a float32 or float64 ndarray."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array of float32 or float64, "
                        f"got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {a.dtype}")
    return a.dtype


def check_array(name: str, a: object, dtype: np.dtype, shape: Sequence[int | str]) -> np.ndarray:
    """Check that ``a`` is an ndarray of ``dtype`` and ``shape``; return it.

    Parameters
    ----------
    name : str
        The argument's name, used in the error message.
    a : object
        The value to check.
    dtype : numpy.dtype
        The dtype every array of the call shares (the dtype of ``x``).
    shape : sequence of int or str
        Expected sizes; a str entry (e.g. ``"P"``) accepts any size >= 1.
    """
    if float_dtype(name, a) != dtype:
        raise TypeError(f"{name}: expected {dtype} like x, got {a.dtype}")
    fits = a.ndim == len(shape) and all(
        got >= 1 if isinstance(want, str) else got == want for got, want in zip(a.shape, shape))
    if not fits:
        sizes = " with sizes >= 1" if any(isinstance(want, str) for want in shape) else ""
        raise ValueError(f"{name}: expected shape {_format_shape(shape)}{sizes}, "
                         f"got {_format_shape(a.shape)}")
    return a


def check_optional(name: str, a: object, dtype: np.dtype,
                   shape: Sequence[int | str]) -> np.ndarray | None:
    """``check_array`` that lets None through."""
    return None if a is None else check_array(name, a, dtype, shape)


def array_or_zeros(name: str, a: object, dtype: np.dtype, shape: Sequence[int]) -> np.ndarray:
    """``check_array``, with None standing for zeros of ``shape``."""
    return np.zeros(shape, dtype) if a is None else check_array(name, a, dtype, shape)


def check_sequence(x: object) -> tuple[int, int, int]:
    """Check the input sequence ``x`` [T, B, I], which sets the dtype; return (T, B, I)."""
    return check_array("x", x, float_dtype("x", x), ("T", "B", "I")).shape


def check_gate_rows(name: str, w: object, dtype: np.dtype, G: int, columns: int) -> int:
    """Check a weight [G*H, columns] with H >= 1 (e.g. w_ih [4H, I]); return H."""
    rows = check_array(name, w, dtype, (f"{G}*H", columns)).shape[0]
    if rows % G != 0:
        raise ValueError(f"{name}: expected shape ({G}*H, {columns}), "
                         f"got {_format_shape(w.shape)}")
    return rows // G


def check_lengths(lengths: object, T: int, B: int) -> np.ndarray | None:
    """Check per-row sequence lengths: None (every row has length T) or int64 [B] in [1, T]."""
    if lengths is None:
        return None
    if not isinstance(lengths, np.ndarray) or lengths.dtype != np.int64:
        kind = lengths.dtype if isinstance(lengths, np.ndarray) else type(lengths).__name__
        raise TypeError(f"lengths: expected a NumPy array of int64, got {kind}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {_format_shape(lengths.shape)}")
    if lengths.min() < 1 or lengths.max() > T:
        raise ValueError(f"lengths: expected values in [1, {T}], "
                         f"got values in [{lengths.min()}, {lengths.max()}]")
    return lengths


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``; return it."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {listed}, got {value!r}")
    return value


def check_cache(cache: object, dtype: np.dtype,
                fields: Mapping[str, Sequence[int]]) -> Mapping[str, np.ndarray]:
    """Check a training cache: a dict holding at least ``fields`` (name -> shape); return it."""
    if not isinstance(cache, Mapping):
        raise TypeError(f"cache: expected the dict returned by a forward call with "
                        f"training=True, got {type(cache).__name__}")
    for field, shape in fields.items():
        if field not in cache:
            raise ValueError(f"cache: missing field {field!r}")
        check_array(f"cache[{field!r}]", cache[field], dtype, shape)
    return cache
