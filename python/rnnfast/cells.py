"""Drop-in single-step cells for NumPy code, with torch.nn.LSTMCell / GRUCell / RNNCell semantics
and weights. Each call is one fused kernel step (a T = 1 sequence) in C++.

``x`` is [B, I] or [I] (then ``h``, ``c`` and the results are [H]); float32 or float64, the result
has the dtype of ``x`` (other float dtypes are converted, see ``rnnfast._convert``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from ._convert import as_float, as_optional_float, compute_dtype

__all__ = ["lstm_cell", "gru_cell", "rnn_cell"]

_LSTM_STATES = ("h", "c")  # the state arguments of each kernel, in order
_H_STATE = ("h",)


def _step_inputs(x: Any, states: dict[str, Any], weights: dict[str, Any]):
    """Convert a cell call's arrays; return (x [1, B, I], states [B, *], weights, unbatched)."""
    dtype = compute_dtype("x", x)
    xa = as_float("x", x, dtype)
    if xa.ndim not in (1, 2):
        raise ValueError(f"x: expected a 1-D (I,) or 2-D (B, I) array, got shape {xa.shape}")
    unbatched = xa.ndim == 1
    out_states = {}
    for name, value in states.items():
        s = as_float(name, value, dtype)
        if s.ndim != xa.ndim:
            want = "1-D (H,)" if unbatched else "2-D (B, H)"
            raise ValueError(f"{name}: expected a {want} array like x, got shape {s.shape}")
        out_states[name] = s[None] if unbatched else s
    out_weights = {name: as_optional_float(name, value, dtype) for name, value in weights.items()}
    return (xa[None, None] if unbatched else xa[None]), out_states, out_weights, unbatched


def _step(forward: Any, x: Any, names: tuple[str, ...], states: tuple[Any, ...], w_ih: Any,
          w_hh: Any, b_ih: Any, b_hh: Any, options: dict[str, Any] | None = None
          ) -> tuple[tuple[Any, ...], bool]:
    """One step of ``forward`` (an ``_core`` kernel) on the states ``states`` (named ``names``):
    (its outputs, whether x is unbatched). Arrays the kernel accepts go to it as they are: _core
    checks every argument (types, dtypes, shapes, layout) and converts nothing, so whatever it
    accepts is what ``_step_inputs`` would hand it unchanged. What it refuses goes through
    ``_step_inputs``, which converts it or reports the error. (A step at H = 256 spends about 4 us
    in ``_step_inputs``, a tenth of the step.) Options at _core's default are left out (None): with
    any keyword argument, a pybind11 call takes a slower path (about 0.8 us more here)."""
    if type(x) is np.ndarray and x.ndim in (1, 2):
        unbatched = x.ndim == 1
        try:
            if unbatched:
                x3, s3 = x[None, None], tuple(s[None] for s in states)
            else:
                x3, s3 = x[None], states
            if options is None:
                return forward(x3, *s3, w_ih, w_hh, b_ih, b_hh), unbatched
            return forward(x3, *s3, w_ih, w_hh, b_ih, b_hh, **options), unbatched
        except (TypeError, ValueError):
            pass
    x3, s, w, unbatched = _step_inputs(x, dict(zip(names, states)),
                                       {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh})
    return forward(x3, *s.values(), *w.values(), **(options or {})), unbatched


def lstm_cell(x: ArrayLike, h: ArrayLike, c: ArrayLike, w_ih: ArrayLike, w_hh: ArrayLike,
              b_ih: ArrayLike | None = None,
              b_hh: ArrayLike | None = None) -> tuple[NDArray[np.floating], NDArray[np.floating]]:
    """One LSTM step, as torch.nn.LSTMCell.

    Parameters
    ----------
    x : [B, I] or [I]
    h, c : [B, H] or [H]
    w_ih : [4H, I], rows in gate order i, f, g, o
    w_hh : [4H, H]
    b_ih, b_hh : [4H] or None

    Returns
    -------
    (h_new, c_new) : [B, H] or [H] each
    """
    (_, h_n, c_n, _), unbatched = _step(_core.lstm_forward, x, _LSTM_STATES, (h, c), w_ih, w_hh,
                                        b_ih, b_hh)
    return (h_n[0], c_n[0]) if unbatched else (h_n, c_n)


def gru_cell(x: ArrayLike, h: ArrayLike, w_ih: ArrayLike, w_hh: ArrayLike,
             b_ih: ArrayLike | None = None, b_hh: ArrayLike | None = None,
             linear_before_reset: bool = True) -> NDArray[np.floating]:
    """One GRU step, as torch.nn.GRUCell (``linear_before_reset=False``: Cho et al. 2014's form).

    Parameters
    ----------
    x : [B, I] or [I]
    h : [B, H] or [H]
    w_ih : [3H, I], rows in gate order r, z, n
    w_hh : [3H, H]
    b_ih, b_hh : [3H] or None

    Returns
    -------
    h_new : [B, H] or [H]
    """
    options = None if linear_before_reset else {"linear_before_reset": False}
    (_, h_n, _), unbatched = _step(_core.gru_forward, x, _H_STATE, (h,), w_ih, w_hh, b_ih, b_hh,
                                   options)
    return h_n[0] if unbatched else h_n


def rnn_cell(x: ArrayLike, h: ArrayLike, w_ih: ArrayLike, w_hh: ArrayLike,
             b_ih: ArrayLike | None = None, b_hh: ArrayLike | None = None,
             nonlinearity: str = "tanh") -> NDArray[np.floating]:
    """One Elman RNN step, as torch.nn.RNNCell.

    Parameters
    ----------
    x : [B, I] or [I]
    h : [B, H] or [H]
    w_ih : [H, I]
    w_hh : [H, H]
    b_ih, b_hh : [H] or None
    nonlinearity : "tanh" or "relu"

    Returns
    -------
    h_new : [B, H] or [H]
    """
    plain_tanh = type(nonlinearity) is str and nonlinearity == "tanh"
    options = None if plain_tanh else {"nonlinearity": nonlinearity}  # see _step
    (_, h_n, _), unbatched = _step(_core.rnn_forward, x, _H_STATE, (h,), w_ih, w_hh, b_ih, b_hh,
                                   options)  # nonlinearity is checked by _core
    return h_n[0] if unbatched else h_n
