"""What every rnnfast module with parameters shares (the recurrent layers, Embedding, Linear):
training / eval mode, the live parameters for an optimiser, gradient reset and state dicts with
PyTorch's semantics.

A subclass sets ``dtype``, ``_params`` (name -> array), ``_shapes`` (name -> shape), ``grads``
(name -> array like the parameter), ``training`` and ``_saved`` (what ``backward`` needs; None in
eval mode).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ._convert import as_float

__all__ = ["Module", "check_size"]


def check_size(name: str, value: Any) -> int:
    """``value`` as an int, after checking it is an integer >= 1 (not a bool)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    return int(value)


# Parameters start on a 64-byte boundary (a cache line, one AVX-512 register). A short call (a
# single step; reads_weights_directly in csrc/seq.h) reads the weights in place with full-register
# loads; NumPy aligns large arrays to 16 bytes only, and on such weights an LSTM step at H = 256
# took 1.05x-1.15x the time of aligned ones (Zen 4). Loading and optimising write the arrays in
# place, so they stay aligned.
_PARAM_ALIGNMENT = 64


def aligned_param(a: np.ndarray, dtype: Any) -> np.ndarray:
    """A C-contiguous copy of ``a`` in ``dtype`` whose data starts on a 64-byte boundary."""
    a = np.asarray(a, dtype)
    buf = np.empty(a.nbytes + _PARAM_ALIGNMENT, np.uint8)
    start = -buf.ctypes.data % _PARAM_ALIGNMENT
    out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


class Module:
    dtype: np.dtype
    _params: dict[str, np.ndarray]
    _shapes: dict[str, tuple[int, ...]]
    grads: dict[str, np.ndarray]
    training: bool
    _saved: Any

    def train(self, mode: bool = True) -> "Module":
        self.training = bool(mode)
        if not self.training:
            self._saved = None
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays (an optimiser updates them in place), PyTorch's names."""
        return self._params

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters under PyTorch's names (``weight_ih_l0``, ...)."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load parameters from any mapping of array-likes (torch tensors too). Names and shapes are
        checked first; on any error nothing is changed."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state_dict: expected a mapping of name -> array, got {type(state).__name__}")
        unexpected = sorted(set(state) - set(self._params))
        missing = sorted(set(self._params) - set(state))
        if unexpected or missing:
            raise KeyError(f"state_dict: unexpected keys {unexpected}, missing keys {missing}")
        staged = {}
        for name, shape in self._shapes.items():
            a = as_float(name, state[name], self.dtype)
            if a.shape != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
            staged[name] = a
        for name, a in staged.items():
            self._params[name][...] = a
