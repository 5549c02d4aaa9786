"""Embedding and Linear: the non-recurrent building blocks of a sequence model, with the layers'
API.

Each module owns its parameters under PyTorch's names (``weight``, ``bias``; so
``load_state_dict(torch_module.state_dict())`` works), runs ``forward`` (also ``module(x)``), and
after a training-mode forward ``backward(grad_output)`` accumulates every parameter gradient into
``grads``. ``parameters()``, ``zero_grad()``, ``train()`` / ``eval()``, ``state_dict()`` and
``load_state_dict()`` are the very methods of ``rnnfast.LSTM`` / ``GRU`` / ``RNN``, so an optimiser
from ``rnnfast.optim`` drives any mix of these modules and the recurrent layers.

Shapes: ``...`` is any leading shape (e.g. [T, B]); D the embedding size; I, O the input and output
features of a Linear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._convert import as_float, compute_dtype
from ._module import Module, aligned_param, check_size

__all__ = ["Embedding", "Linear", "as_ids"]


def as_ids(name: str, value: Any, size: int | None = None) -> np.ndarray:
    """Token ids as an int64 array; with ``size``, every id is checked to lie in [0, size).

    Integer data only: floats and booleans are refused with a TypeError (a float "id" is a bug).
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected an array of integer ids, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if size is not None and a.size and (a.min() < 0 or a.max() >= size):
        raise ValueError(f"{name}: expected ids in [0, {size}), got values in "
                         f"[{a.min()}, {a.max()}]")
    return a


class _Module(Module):
    """Module plus what Embedding and Linear share: building the parameters, calling, and taking
    what the last training-mode forward saved."""

    def _init_params(self, dtype: Any, params: dict[str, np.ndarray]) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self._params = {name: aligned_param(p, self.dtype) for name, p in params.items()}
        self._shapes = {name: p.shape for name, p in self._params.items()}
        self.grads = {name: np.zeros_like(p) for name, p in self._params.items()}
        self.training = True
        self._saved: Any = None

    def __call__(self, x):
        return self.forward(x)

    def _take_saved(self, name: str) -> Any:
        if not self.training:
            raise RuntimeError(f"{name}.backward: the module is in eval mode; call train() and "
                               "run a forward first")
        if self._saved is None:
            raise RuntimeError(f"{name}.backward: no training-mode forward to backpropagate "
                               "through")
        return self._saved


class Embedding(_Module):
    """A lookup table of vectors, as torch.nn.Embedding.

    Parameters
    ----------
    num_embeddings : int, the vocabulary size V
    embedding_dim : int, D
    padding_idx : int or None; that row starts at zero and never receives a gradient
    dtype : float32 or float64
    seed : int or None; weights ~ N(0, 1) as PyTorch's
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 dtype: Any = np.float32, seed: int | None = None):
        self.num_embeddings = check_size("num_embeddings", num_embeddings)
        self.embedding_dim = check_size("embedding_dim", embedding_dim)
        if padding_idx is not None and not 0 <= padding_idx < self.num_embeddings:
            raise ValueError(f"padding_idx: expected None or an id in [0, {self.num_embeddings}), "
                             f"got {padding_idx!r}")
        self.padding_idx = padding_idx
        weight = np.random.default_rng(seed).standard_normal((self.num_embeddings,
                                                              self.embedding_dim))
        if padding_idx is not None:
            weight[padding_idx] = 0
        self._init_params(dtype, {"weight": weight})

    def forward(self, ids: Any) -> np.ndarray:
        """ids: ints [...] in [0, V) -> vectors [..., D] (a new array)."""
        ids = as_ids("ids", ids, self.num_embeddings)
        if self.training:
            self._saved = ids
        return self._params["weight"][ids]

    def backward(self, grad_output: Any) -> None:
        """Accumulate dL/dweight from grad_output [..., D]. Ids have no gradient: returns None."""
        ids = self._take_saved("Embedding")
        g = as_float("grad_output", grad_output, self.dtype)
        if g.shape != ids.shape + (self.embedding_dim,):
            raise ValueError(f"grad_output: expected shape {ids.shape + (self.embedding_dim,)}, "
                             f"got {g.shape}")
        flat_ids, flat_g = ids.reshape(-1), g.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat_ids != self.padding_idx
            flat_ids, flat_g = flat_ids[keep], flat_g[keep]
        np.add.at(self.grads["weight"], flat_ids, flat_g)

    def __repr__(self) -> str:
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}, padding_idx="
                f"{self.padding_idx}, dtype={self.dtype})")


class Linear(_Module):
    """y = x W^T + b, as torch.nn.Linear.

    Parameters
    ----------
    in_features : int, I
    out_features : int, O
    bias : bool
    dtype : float32 or float64
    seed : int or None; weight [O, I] and bias [O] ~ U(-1/sqrt(I), 1/sqrt(I)) as PyTorch's
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = np.float32, seed: int | None = None):
        self.in_features = check_size("in_features", in_features)
        self.out_features = check_size("out_features", out_features)
        self.bias = bool(bias)
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(self.in_features)
        params = {"weight": rng.uniform(-bound, bound, (self.out_features, self.in_features))}
        if self.bias:
            params["bias"] = rng.uniform(-bound, bound, self.out_features)
        self._init_params(dtype, params)

    def forward(self, x: Any) -> np.ndarray:
        """x [..., I] (any float dtype, converted to the module's) -> y [..., O]."""
        compute_dtype("x", x)  # refuses integer input with a TypeError
        x = as_float("x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {x.shape}")
        if self.training:
            self._saved = x
        y = x @ self._params["weight"].T
        if self.bias:
            y += self._params["bias"]
        return y

    def backward(self, grad_output: Any) -> np.ndarray:
        """Accumulate dL/dweight and dL/dbias from grad_output [..., O]; return dL/dx [..., I]."""
        x = self._take_saved("Linear")
        g = as_float("grad_output", grad_output, self.dtype)
        if g.shape != x.shape[:-1] + (self.out_features,):
            raise ValueError(f"grad_output: expected shape {x.shape[:-1] + (self.out_features,)}, "
                             f"got {g.shape}")
        g2 = g.reshape(-1, self.out_features)
        self.grads["weight"] += g2.T @ x.reshape(-1, self.in_features)
        if self.bias:
            self.grads["bias"] += g2.sum(axis=0)
        return g @ self._params["weight"]

    def __repr__(self) -> str:
        return (f"Linear({self.in_features}, {self.out_features}, bias={self.bias}, "
                f"dtype={self.dtype})")


class _Composite:
    """A model made of named modules (``self._modules``: part -> module with the API above):
    their parameters and gradients merged under the names ``<part>.<name>``."""

    _modules: dict[str, Any]

    def _merged(self, attribute: str) -> dict[str, np.ndarray]:
        return {f"{part}.{name}": a for part, module in self._modules.items()
                for name, a in getattr(module, attribute).items()}

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays by name (an optimiser updates them in place)."""
        return self._merged("_params")

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The live gradient arrays by name."""
        return self._merged("grads")

    def zero_grad(self) -> None:
        for module in self._modules.values():
            module.zero_grad()

    def _train(self, mode: bool) -> None:
        for module in self._modules.values():
            module.train(mode)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters by name."""
        return {name: p.copy() for name, p in self.parameters().items()}

    def _load_parts(self, state: Mapping[str, Any]) -> None:
        for part, module in self._modules.items():
            prefix = part + "."
            module.load_state_dict({name[len(prefix):]: a for name, a in state.items()
                                    if name.startswith(prefix)})

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load every parameter; names and shapes are checked, and on any error nothing changes."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state_dict: expected a mapping of name -> array, got "
                            f"{type(state).__name__}")
        unexpected = sorted(set(state) - set(self.parameters()))
        if unexpected:
            raise KeyError(f"state_dict: unexpected keys {unexpected}")
        backup = self.state_dict()
        try:
            self._load_parts(state)
        except Exception:
            self._load_parts(backup)
            raise
