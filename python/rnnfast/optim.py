"""Optimisers and gradient clipping on dicts of NumPy arrays, with torch.optim's update rules.

An optimiser holds a mapping name -> parameter array (the live arrays: ``layer.parameters()``, or
several modules' merged under distinct names) and ``step(grads)`` updates them in place from a
mapping with the same names (``layer.grads``)::

    opt = rnnfast.optim.Adam(lstm.parameters(), lr=1e-3)
    lstm.zero_grad(); y, _ = lstm(x); lstm.backward(dy)
    rnnfast.optim.clip_grad_norm(lstm.grads, 1.0)
    opt.step(lstm.grads)

Updates run in each parameter's dtype, in place; the per-parameter state (momentum, moments) has
the parameter's dtype too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = ["SGD", "Adam", "Optimizer", "clip_grad_norm", "create"]


class Optimizer:
    """Base class: checks and holds the parameters; ``step`` checks the gradients against them."""

    def __init__(self, params: Mapping[str, np.ndarray], lr: float):
        if not isinstance(params, Mapping):
            raise TypeError(f"params: expected a mapping of name -> array, got "
                            f"{type(params).__name__}")
        if not params:
            raise ValueError("params: expected at least one parameter, got an empty mapping")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                got = type(p).__name__ + (f" of {p.dtype}" if hasattr(p, "dtype") else "")
                raise TypeError(f"params[{name!r}]: expected a float NumPy array, got {got}")
            if not p.flags.writeable:
                raise ValueError(f"params[{name!r}]: the array is read-only; it is updated in "
                                 "place")
        if not lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr!r}")
        self.params = dict(params)
        self.lr = float(lr)
        self.steps = 0

    def _checked(self, grads: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(grads, Mapping):
            raise TypeError(f"grads: expected a mapping of name -> array, got "
                            f"{type(grads).__name__}")
        missing = sorted(set(self.params) - set(grads))
        unexpected = sorted(set(grads) - set(self.params))
        if missing or unexpected:
            raise KeyError(f"grads: missing keys {missing}, unexpected keys {unexpected}")
        out = {}
        for name, p in self.params.items():
            g = np.asarray(grads[name])
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}]: expected shape {p.shape}, got {g.shape}")
            out[name] = g.astype(p.dtype, copy=False)
        return out

    def step(self, grads: Mapping[str, Any]) -> None:
        """Update every parameter in place from ``grads`` (same names and shapes)."""
        checked = self._checked(grads)
        self.steps += 1
        for name, p in self.params.items():
            self._update(name, p, checked[name])

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, as torch.optim.SGD (dampening 0)::

        g += weight_decay * p;  buf = g (first step) or momentum * buf + g;
        p -= lr * (g + momentum * buf if nesterov else buf)      # buf = g without momentum
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False):
        super().__init__(params, lr)
        if not momentum >= 0.0:
            raise ValueError(f"momentum: expected a value >= 0, got {momentum!r}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected a value >= 0, got {weight_decay!r}")
        if nesterov and momentum <= 0:
            raise ValueError("nesterov: needs a momentum > 0")
        self.momentum, self.weight_decay = float(momentum), float(weight_decay)
        self.nesterov = bool(nesterov)
        self.buffers: dict[str, np.ndarray] = {}

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        if self.weight_decay:
            g = g + p.dtype.type(self.weight_decay) * p
        if self.momentum:
            buf = self.buffers.get(name)
            if buf is None:
                buf = self.buffers[name] = g.copy()
            else:
                buf *= p.dtype.type(self.momentum)
                buf += g
            g = g + p.dtype.type(self.momentum) * buf if self.nesterov else buf
        p -= p.dtype.type(self.lr) * g


class Adam(Optimizer):
    """Adam (Kingma and Ba 2015), as torch.optim.Adam::

        g += weight_decay * p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    """

    def __init__(self, params: Mapping[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas: expected two values in [0, 1), got {betas!r}")
        if not eps >= 0:
            raise ValueError(f"eps: expected a value >= 0, got {eps!r}")
        self.betas, self.eps = (float(b1), float(b2)), float(eps)
        self.weight_decay = float(weight_decay)
        self.m = {name: np.zeros_like(p) for name, p in self.params.items()}
        self.v = {name: np.zeros_like(p) for name, p in self.params.items()}

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        (b1, b2), t, f = self.betas, self.steps, p.dtype.type
        if self.weight_decay:
            g = g + f(self.weight_decay) * p
        m, v = self.m[name], self.v[name]
        m += f(1 - b1) * (g - m)            # torch: exp_avg.lerp_(grad, 1 - beta1)
        v *= f(b2)
        v += f(1 - b2) * g * g
        step_size = self.lr / (1 - b1 ** t)
        denom = np.sqrt(v) / f(math.sqrt(1 - b2 ** t))
        denom += f(self.eps)
        p -= f(step_size) * (m / denom)


def create(name: str, params: Mapping[str, np.ndarray], lr: float) -> Optimizer:
    """An optimiser by name: "adam" (Adam) or "sgd" (SGD with momentum 0.9)."""
    if name == "adam":
        return Adam(params, lr=lr)
    if name == "sgd":
        return SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"optimizer: expected 'adam' or 'sgd', got {name!r}")


def clip_grad_norm(grads: Mapping[str, np.ndarray] | Iterable[np.ndarray], max_norm: float,
                   norm_type: float = 2.0) -> float:
    """Scale the gradients in place so that their joint norm is at most ``max_norm``.

    As torch.nn.utils.clip_grad_norm_: the norm is taken over all gradients together as one
    vector (for the default L2 norm: the square root of the sum of squares, not its square);
    when it exceeds ``max_norm`` every gradient is multiplied by ``max_norm / (norm + 1e-6)``.

    Parameters
    ----------
    grads : a mapping name -> array (``layer.grads``) or an iterable of arrays
    max_norm : float
    norm_type : float, p of the p-norm; ``float("inf")`` for the largest absolute value

    Returns
    -------
    total_norm : float, the norm before clipping
    """
    arrays = list(grads.values()) if isinstance(grads, Mapping) else list(grads)
    for k, g in enumerate(arrays):
        if not isinstance(g, np.ndarray) or g.dtype.kind != "f":
            raise TypeError(f"grads[{k}]: expected a float NumPy array, got {type(g).__name__}")
    p = float(norm_type)
    if not p > 0:
        raise ValueError(f"norm_type: expected a positive number or inf, got {norm_type!r}")
    if not arrays:
        return 0.0
    if math.isinf(p):
        total = max(float(np.max(np.abs(g), initial=0.0)) for g in arrays)
    else:
        total = float(np.linalg.norm([np.linalg.norm(g.ravel(), ord=p) for g in arrays], ord=p))
    coef = min(float(max_norm) / (total + 1e-6), 1.0)
    if coef != 1.0:  # also when total is nan or inf: the gradients become nan, as torch's do
        for g in arrays:
            g *= g.dtype.type(coef)
    return total
