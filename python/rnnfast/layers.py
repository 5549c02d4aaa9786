"""Recurrent layers with torch.nn.LSTM / GRU / RNN's arguments, shapes and weights, in NumPy.

The problem is factored as PyTorch factors it: a *cell kind* (LSTM, GRU, RNN) says which kernel runs
one direction of one layer over the whole sequence; a *direction* is one kernel call (reversed for
the backward direction, whose outputs come back in time order); the *stack* loops over layers,
merging the two directions and applying dropout between layers. Training is built in: a forward in
training mode saves what ``backward`` needs, and ``backward`` accumulates every parameter gradient
into ``grads``.

The kernels come from ``rnnfast._core`` (``backend="core"``, the default) or from the NumPy
reference ``rnnfast.reference`` (``backend="reference"``): both have the same functions.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, TypeVar, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

# A recurrent state: h, or (h, c) for an LSTM; each [D*L, B, width].
State = Union[NDArray[np.floating], tuple[NDArray[np.floating], NDArray[np.floating]]]
StateLike = Union[ArrayLike, tuple[ArrayLike, ArrayLike], None]

import inspect

from . import _core, reference
from ._convert import as_float, as_lengths, compute_dtype
from ._io import load_npz, save_npz
from ._module import Module, aligned_param, check_size

__all__ = ["LSTM", "GRU", "RNN"]

_BACKENDS = {"core": _core, "reference": reference}
_MERGE_MODES = ("concat", "sum", "ave", "mul")

# Short (kernel) parameter names -> PyTorch's state_dict prefixes.
_TORCH_NAMES = {
    "w_ih": "weight_ih",
    "w_hh": "weight_hh",
    "b_ih": "bias_ih",
    "b_hh": "bias_hh",
    "w_hr": "weight_hr",
    "w_peep": "weight_peephole",
}


# ----------------------------------------------------------------------------------------------
# Cell kinds: which kernel, which parameters, which states.

class _Kind:
    """What a cell kind shares: ``gates`` rows per unit in w_ih (G*H, I) and w_hh (G*H, P), where
    P is the width of the first state (h). ``options``: the kind's keyword arguments to the
    kernels that are not at their defaults."""

    gates: int
    state_names: tuple[str, ...] = ("h",)
    options: dict[str, Any] = {}

    def _forward(self, fn: Any, args: tuple[Any, ...], reverse: bool, lengths: Any,
                 training: bool, **weights: Any) -> Any:
        """fn(*args, ...) with only the keyword arguments that are not at the kernel's default:
        with any keyword argument, a pybind11 call takes a slower path (see cells._step; a
        layer's step at B=1, H=16 took about 0.5 us more)."""
        kw = {**self.options, **{name: w for name, w in weights.items() if w is not None}}
        if reverse:
            kw["reverse"] = True
        if lengths is not None:
            kw["lengths"] = lengths
        if training:
            kw["training"] = True
        return fn(*args, **kw) if kw else fn(*args)

    def state_widths(self, H: int) -> tuple[int, ...]:
        return (H,)

    def param_shapes(self, input_size: int, H: int, bias: bool) -> dict[str, tuple[int, ...]]:
        G, P = self.gates, self.state_widths(H)[0]
        shapes: dict[str, tuple[int, ...]] = {"w_ih": (G * H, input_size), "w_hh": (G * H, P)}
        if bias:
            shapes.update(b_ih=(G * H,), b_hh=(G * H,))
        return shapes


class _LstmKind(_Kind):
    gates = 4
    state_names = ("h", "c")

    def __init__(self, proj_size: int, peephole: bool, coupled: bool):
        self.proj_size, self.peephole, self.coupled = proj_size, peephole, coupled
        self.options = {"coupled": True} if coupled else {}

    def state_widths(self, H: int) -> tuple[int, ...]:
        return (self.proj_size or H, H)

    def param_shapes(self, input_size: int, H: int, bias: bool) -> dict[str, tuple[int, ...]]:
        shapes = super().param_shapes(input_size, H, bias)
        if self.proj_size:
            shapes["w_hr"] = (self.proj_size, H)
        if self.peephole:
            shapes["w_peep"] = (3, H)
        return shapes

    def forward(self, k, x, s0, p, reverse, lengths, training):
        y, h_n, c_n, cache = self._forward(
            k.lstm_forward, (x, s0[0], s0[1], p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh")),
            reverse, lengths, training, w_hr=p.get("w_hr"), w_peep=p.get("w_peep"))
        return y, (h_n, c_n), cache

    def backward(self, k, dy, ds_n, x, s0, p, cache, reverse, lengths):
        g = k.lstm_backward(
            dy, ds_n[0], ds_n[1], x, s0[0], s0[1], p["w_ih"], p["w_hh"], cache,
            w_hr=p.get("w_hr"), w_peep=p.get("w_peep"), coupled=self.coupled, reverse=reverse,
            lengths=lengths)
        return g["dx"], (g["dh0"], g["dc0"]), g


class _GruKind(_Kind):
    gates = 3

    def __init__(self, linear_before_reset: bool):
        self.linear_before_reset = linear_before_reset
        self.options = {} if linear_before_reset else {"linear_before_reset": False}

    def forward(self, k, x, s0, p, reverse, lengths, training):
        y, h_n, cache = self._forward(
            k.gru_forward, (x, s0[0], p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh")),
            reverse, lengths, training)
        return y, (h_n,), cache

    def backward(self, k, dy, ds_n, x, s0, p, cache, reverse, lengths):
        g = k.gru_backward(dy, ds_n[0], x, s0[0], p["w_ih"], p["w_hh"], cache,
                           linear_before_reset=self.linear_before_reset, reverse=reverse,
                           lengths=lengths)
        return g["dx"], (g["dh0"],), g


class _RnnKind(_Kind):
    gates = 1

    def __init__(self, nonlinearity: str):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.options = {} if nonlinearity == "tanh" else {"nonlinearity": nonlinearity}

    def forward(self, k, x, s0, p, reverse, lengths, training):
        y, h_n, cache = self._forward(
            k.rnn_forward, (x, s0[0], p["w_ih"], p["w_hh"], p.get("b_ih"), p.get("b_hh")),
            reverse, lengths, training)
        return y, (h_n,), cache

    def backward(self, k, dy, ds_n, x, s0, p, cache, reverse, lengths):
        g = k.rnn_backward(dy, ds_n[0], x, s0[0], p["w_ih"], p["w_hh"], cache,
                           nonlinearity=self.nonlinearity, reverse=reverse, lengths=lengths)
        return g["dx"], (g["dh0"],), g


# ----------------------------------------------------------------------------------------------
# Merging the two directions of a bidirectional layer.

def _merge(mode: str, ys: list[np.ndarray]) -> np.ndarray:
    if len(ys) == 1:
        return ys[0]
    if mode == "concat":
        return np.concatenate(ys, axis=-1)
    if mode == "sum":
        return ys[0] + ys[1]
    if mode == "ave":
        return (ys[0] + ys[1]) * ys[0].dtype.type(0.5)
    return ys[0] * ys[1]


def _merge_backward(mode: str, dout: np.ndarray, ys: list[np.ndarray]) -> list[np.ndarray]:
    """Split the gradient of a merged output into one gradient per direction."""
    if len(ys) == 1:
        return [dout]
    if mode == "concat":
        w = ys[0].shape[-1]
        return [np.ascontiguousarray(dout[..., :w]), np.ascontiguousarray(dout[..., w:])]
    if mode == "sum":
        return [dout, dout]
    if mode == "ave":
        half = dout * dout.dtype.type(0.5)
        return [half, half]
    return [dout * ys[1], dout * ys[0]]


# ----------------------------------------------------------------------------------------------
# Running the two directions of a bidirectional layer side by side.
#
# The directions are independent kernel calls, and the kernels release the GIL: on a second Python
# thread, each on half the kernels' threads, they share no barrier, where one call after the other,
# each on all the threads, meets the threads at a barrier every step. The results are bitwise the
# same (they never depend on the thread count). Below _SIDE_BY_SIDE_WORK multiply-adds per
# direction the hand-over to the second thread (waking it, about 0.1-0.35 ms) costs more than it
# saves. On a 2-core AMD EPYC (Zen 3), 2-layer bidirectional layers side by side took, against one
# direction after the other (medians of 7-61 interleaved runs): LSTM forward 1.1-4x the time at
# 0.16-3.3 million multiply-adds per direction, 0.93x at 13 million (B=1, T=100, H=128),
# 0.65-0.96x for LSTMs and GRUs at B=8-64, H=128-512; training steps 0.63-1.10x (mostly < 1).

_SIDE_BY_SIDE_WORK = 1.0e7
_R = TypeVar("_R")


class _SideThread:
    """One worker thread, started on first use and started again in a forked child (the parent's
    worker does not exist there)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, f: Callable[[], _R]) -> Future[_R]:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="rnnfast-direction")
            return self._pool.submit(f)

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._pool = None


_side_thread = _SideThread()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_side_thread.forget)


def _on_threads(f: Callable[[], _R], n: int) -> Callable[[], _R]:
    """f, run with the kernels it calls on n threads (for the calling thread only)."""
    def run() -> _R:
        previous = _core.set_local_threads(n)
        try:
            return f()
        finally:
            _core.set_local_threads(previous)
    return run


def _each_direction(f: Callable[[int], _R], D: int, kernels: Any, work: float) -> list[_R]:
    """[f(d) for d in range(D)], the two directions side by side when it pays: with the compiled
    kernels, at least two threads and at least _SIDE_BY_SIDE_WORK multiply-adds per direction."""
    threads = 1 if D == 1 or kernels is not _core else _core.get_num_threads()
    if threads < 2 or work < _SIDE_BY_SIDE_WORK:
        return [f(d) for d in range(D)]
    try:
        second = _side_thread.submit(_on_threads(lambda: f(1), threads // 2))
    except RuntimeError:  # no new threads once the interpreter shuts down
        return [f(d) for d in range(D)]
    try:
        first = _on_threads(lambda: f(0), threads - threads // 2)()
    finally:
        wait([second])
    return [first, second.result()]


def _private(a: np.ndarray, source: Any) -> np.ndarray:
    """``a``, or a copy of it when it may share memory with the caller's ``source``."""
    if source is None:
        return a
    try:
        shared = np.may_share_memory(a, np.asarray(source))
    except (TypeError, ValueError):
        shared = True
    return a.copy() if shared else a


# ----------------------------------------------------------------------------------------------
# The stack.

class _RecurrentLayer(Module):
    """Shared machinery of LSTM, GRU and RNN: parameters, the stack, training, files (modes and
    state dicts come from Module)."""

    def __init__(self, kind, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, dropout: float, bidirectional: bool, merge_mode: str,
                 dtype: Any, seed: int | None, backend: str):
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            check_size(name, value)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"merge_mode: expected one of {_MERGE_MODES}, got {merge_mode!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend: expected one of {tuple(_BACKENDS)}, got {backend!r}")
        if dtype is None:
            raise TypeError("dtype: expected float32 or float64, got None")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self._kind = kind
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.dropout = bool(bias), bool(batch_first), float(dropout)
        self.bidirectional, self.merge_mode = bool(bidirectional), merge_mode
        self.num_directions = 2 if bidirectional else 1
        self.backend = backend
        self._kernels = _BACKENDS[backend]
        self.training = True
        init_seq, drop_seq = np.random.SeedSequence(seed).spawn(2)
        self._dropout_rng = np.random.default_rng(drop_seq)
        self._saved: dict[str, Any] | None = None

        # Parameters, in PyTorch's order and with its names and initialisation.
        init_rng = np.random.default_rng(init_seq)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self._params: dict[str, np.ndarray] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        # Per layer and direction, the (kernel argument, parameter name) pairs: looked up on every
        # call, built once (formatting the names took a sixth of a small layer's forward).
        self._direction_names: list[list[tuple[tuple[str, str], ...]]] = []
        for layer in range(self.num_layers):
            self._direction_names.append([])
            for d in range(self.num_directions):
                shapes = kind.param_shapes(self._layer_input_size(layer), self.hidden_size,
                                           self.bias)
                names = tuple((short, self._param_name(short, layer, d)) for short in shapes)
                self._direction_names[layer].append(names)
                for short, name in names:
                    self._shapes[name] = shapes[short]
                    self._params[name] = aligned_param(
                        init_rng.uniform(-bound, bound, shapes[short]), self.dtype)
        self.grads = {name: np.zeros_like(p) for name, p in self._params.items()}

    # -- sizes and names -----------------------------------------------------------------------
    @property
    def output_size(self) -> int:
        """The width of one direction's output, H_out."""
        widths = self._kind.state_widths(self.hidden_size)
        return widths[0]

    def _layer_input_size(self, layer: int) -> int:
        if layer == 0:
            return self.input_size
        D = self.num_directions if self.merge_mode == "concat" else 1
        return D * self.output_size

    @staticmethod
    def _param_name(short: str, layer: int, d: int) -> str:
        return f"{_TORCH_NAMES[short]}_l{layer}" + ("_reverse" if d == 1 else "")

    def _direction_work(self, layer: int, rows: int) -> float:
        """Multiply-adds of one direction's forward over `rows` = T * B rows, roughly."""
        G, H = self._kind.gates, self.hidden_size
        return float(rows) * G * H * (self._layer_input_size(layer) + self.output_size)

    def _direction_params(self, layer: int, d: int) -> dict[str, np.ndarray]:
        return {short: self._params[name] for short, name in self._direction_names[layer][d]}


    # -- inputs ----------------------------------------------------------------------------------
    def _sequence(self, x: Any) -> np.ndarray:
        """x as a C-contiguous (T, B, I) array of the layer's dtype."""
        compute_dtype("x", x)  # refuses non-float input with a TypeError
        xa = as_float("x", x, self.dtype)
        layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
        if xa.ndim != 3 or xa.shape[2] != self.input_size or 0 in xa.shape:
            raise ValueError(f"x: expected a non-empty 3-D array {layout} with input_size = "
                             f"{self.input_size}, got shape {xa.shape}")
        return np.ascontiguousarray(xa.transpose(1, 0, 2)) if self.batch_first else xa

    def _state_shapes(self, B: int) -> list[tuple[int, int, int]]:
        n = self.num_layers * self.num_directions
        return [(n, B, w) for w in self._kind.state_widths(self.hidden_size)]

    def _states(self, name: str, value: Any, B: int) -> list[np.ndarray]:
        """A state argument (None, h, or (h, c) for an LSTM) as a list of (L*D, B, width) arrays."""
        shapes = self._state_shapes(B)
        if value is None:
            return [np.zeros(s, self.dtype) for s in shapes]
        parts = value if len(shapes) > 1 else (value,)
        if len(shapes) > 1 and (not isinstance(value, (tuple, list)) or len(value) != len(shapes)):
            raise TypeError(f"{name}: expected a tuple (h, c), got {type(value).__name__}")
        out = []
        for k, (part, shape) in enumerate(zip(parts, shapes)):
            label = f"{name}[{k}]" if len(shapes) > 1 else name
            a = as_float(label, part, self.dtype)
            if a.shape != shape:
                raise ValueError(f"{label}: expected shape {shape}, got {a.shape}")
            out.append(a)
        return out

    def _pack_states(self, states: list[np.ndarray]) -> State:
        if len(states) > 1:
            return states[0], states[1]
        return states[0]

    # -- forward / backward ----------------------------------------------------------------------
    def __call__(self, x: ArrayLike, state: StateLike = None,
                 lengths: ArrayLike | None = None) -> tuple[NDArray[np.floating], State]:
        return self.forward(x, state, lengths)

    def forward(self, x: ArrayLike, state: StateLike = None,
                lengths: ArrayLike | None = None) -> tuple[NDArray[np.floating], State]:
        """Run the layer.

        Parameters
        ----------
        x : [T, B, input_size], or [B, T, input_size] with batch_first
        state : None (zeros), or h [D*L, B, H_out] (GRU, RNN), or (h, c) with c [D*L, B, H] (LSTM)
        lengths : None, or ints [B] with 1 <= lengths[b] <= T: the valid steps of each sequence

        Returns
        -------
        output : [T, B, D*H_out] (concat) or [T, B, H_out] (sum, ave, mul); batch-first likewise.
            Zero past each sequence's end.
        state : the final state, structured like ``state``, taken at each sequence's last step.
        """
        xs = self._sequence(x)
        T, B, _ = xs.shape
        lens = as_lengths(lengths)
        if lens is not None:
            if lens.shape != (B,):
                raise ValueError(f"lengths: expected shape ({B},), got {lens.shape}")
            if lens.min() < 1 or lens.max() > T:
                raise ValueError(f"lengths: expected values in [1, {T}], got values in "
                                 f"[{lens.min()}, {lens.max()}]")
        s0 = self._states("state", state, B)
        training = self.training
        if training:
            # backward reads x and the initial state again: keep our own copies, so that the
            # caller may reuse its buffers (e.g. h[...] = h_n in truncated BPTT) in between.
            xs = _private(xs, x)
            given = state if isinstance(state, (tuple, list)) else (state,) * len(s0)
            s0 = [_private(s, v) for s, v in zip(s0, given)]
        D, k = self.num_directions, self._kernels
        finals = [np.empty(s.shape, self.dtype) for s in s0]
        saved_layers = []
        inp = xs
        for layer in range(self.num_layers):
            s0s = [tuple(s[layer * D + d] for s in s0) for d in range(D)]

            def direction(d: int, inp: np.ndarray = inp, layer: int = layer) -> Any:
                return self._kind.forward(k, inp, s0s[d], self._direction_params(layer, d),
                                          d == 1, lens, training)

            ys, caches = [], []
            work = self._direction_work(layer, T * B)
            for d, (y, s_n, cache) in enumerate(_each_direction(direction, D, k, work)):
                for f, s in zip(finals, s_n):
                    f[layer * D + d] = s
                ys.append(y)
                caches.append(cache)
            out = _merge(self.merge_mode, ys)
            mask = None
            if training and self.dropout > 0 and layer < self.num_layers - 1:
                keep = self._dropout_rng.random(out.shape) >= self.dropout
                mask = keep.astype(self.dtype) / self.dtype.type(1.0 - self.dropout)
                out = out * mask
            if training:
                saved_layers.append({"x": inp, "s0": s0s, "caches": caches, "ys": ys, "mask": mask})
            inp = out
        self._saved = {"layers": saved_layers, "lengths": lens, "B": B, "T": T} if training else None
        if training and any(inp is y for y in saved_layers[-1]["ys"]):  # type: ignore[union-attr]
            inp = inp.copy()  # the kernel's output doubles as its cache: hand the user a copy
        output = np.ascontiguousarray(inp.transpose(1, 0, 2)) if self.batch_first else inp
        return output, self._pack_states(finals)

    def backward(self, grad_output: ArrayLike,
                 grad_state: StateLike = None) -> tuple[NDArray[np.floating], State]:
        """Backpropagate through the last training-mode forward; accumulate into ``grads``.

        Parameters
        ----------
        grad_output : gradient of the loss w.r.t. the forward's output, same shape
        grad_state : None (zeros), or the gradient w.r.t. the final state, structured like it

        Returns
        -------
        grad_x : like x
        grad_state0 : the gradient w.r.t. the initial state, structured like the state
        """
        if not self.training:
            raise RuntimeError("backward: the layer is in eval mode; call train() and run a forward first")
        if self._saved is None:
            raise RuntimeError("backward: no training-mode forward to backpropagate through")
        saved = self._saved
        T, B, lens = saved["T"], saved["B"], saved["lengths"]
        D, k = self.num_directions, self._kernels
        width = (D if self.merge_mode == "concat" else 1) * self.output_size
        dout = as_float("grad_output", grad_output, self.dtype)
        want = (B, T, width) if self.batch_first else (T, B, width)
        if dout.shape != want:
            raise ValueError(f"grad_output: expected shape {want}, got {dout.shape}")
        if self.batch_first:
            dout = np.ascontiguousarray(dout.transpose(1, 0, 2))
        ds_n = self._states("grad_state", grad_state, B)
        ds_0 = [np.empty(s.shape, self.dtype) for s in ds_n]
        for layer in reversed(range(self.num_layers)):
            rec = saved["layers"][layer]
            if rec["mask"] is not None:
                dout = dout * rec["mask"]
            dys = _merge_backward(self.merge_mode, dout, rec["ys"])

            def direction(d: int, rec: dict = rec, dys: list = dys, layer: int = layer) -> Any:
                return self._kind.backward(
                    k, dys[d], tuple(s[layer * D + d] for s in ds_n), rec["x"], rec["s0"][d],
                    self._direction_params(layer, d), rec["caches"][d], d == 1, lens)

            dx: np.ndarray | None = None
            work = 2 * self._direction_work(layer, T * B)  # dx and dw: twice the forward's GEMMs
            for d, (dx_d, ds0_d, g) in enumerate(_each_direction(direction, D, k, work)):
                for short, name in self._direction_names[layer][d]:
                    self.grads[name] += g["d" + short]
                for dst, src in zip(ds_0, ds0_d):
                    dst[layer * D + d] = src
                dx = dx_d if dx is None else dx + dx_d
            assert dx is not None  # D >= 1
            dout = dx
        grad_x = np.ascontiguousarray(dout.transpose(1, 0, 2)) if self.batch_first else dout
        return grad_x, self._pack_states(ds_0)

    # -- files ---------------------------------------------------------------------------------------
    _FILE_VERSION = 1

    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments (but seed and backend), enough to rebuild the layer."""
        names = [p for p in inspect.signature(type(self)).parameters if p not in ("seed", "backend")]
        config = {name: getattr(self, name) for name in names}
        config["dtype"] = self.dtype.name
        return config

    def save(self, path: Any) -> None:
        """Write the configuration and the parameters to ``path`` (.npz, nothing pickled)."""
        save_npz(path, type(self).__name__, self._FILE_VERSION, self.config, self._params)

    @classmethod
    def load(cls, path: Any, backend: str = "core") -> "_RecurrentLayer":
        """A layer from a file written by ``save`` of the same class. A file of another kind,
        truncated or corrupt, raises ValueError naming it; nothing in it is executed."""
        config, params = load_npz(path, cls.__name__, cls._FILE_VERSION)
        expected = set(inspect.signature(cls).parameters) - {"seed", "backend"}
        if set(config) != expected:
            raise ValueError(f"{path}: configuration keys {sorted(config)}, expected {sorted(expected)}")
        try:
            cls._check_config_against(config, params)
            layer = cls(**config, seed=0, backend=backend)
            layer.load_state_dict(params)
        except (TypeError, KeyError, ValueError, MemoryError) as err:
            raise ValueError(f"{path}: not a valid {cls.__name__} file ({err})") from err
        return layer

    @classmethod
    def _check_config_against(cls, config: dict[str, Any], params: dict[str, np.ndarray]) -> None:
        """Refuse a configuration that the file's own parameters do not bear out, before building
        anything from it (a forged hidden_size must not make us allocate gigabytes)."""
        gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[cls.__name__]
        w = params.get("weight_ih_l0")
        want = (gates * config.get("hidden_size", -1), config.get("input_size", -1))
        if w is None or w.shape != want:
            raise ValueError(f"weight_ih_l0: expected shape {want} from the configuration, got "
                             f"{None if w is None else w.shape}")
        layers = {k.split("_l")[1].split("_")[0] for k in params if k.startswith("weight_ih_l")}
        if config.get("num_layers") != len(layers):
            raise ValueError(f"num_layers: the configuration says {config.get('num_layers')!r}, "
                             f"the file holds {len(layers)} layers")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, num_layers="
                f"{self.num_layers}, bidirectional={self.bidirectional}, dtype={self.dtype}, "
                f"backend={self.backend!r})")


class LSTM(_RecurrentLayer):
    """Multi-layer LSTM, as torch.nn.LSTM, plus peephole and coupled-gate variants (ONNX semantics)
    and a merge mode for bidirectional outputs. See ``_RecurrentLayer.forward`` for shapes."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, peephole: bool = False, coupled: bool = False,
                 merge_mode: str = "concat", dtype: DTypeLike = np.float32, seed: int | None = None,
                 backend: str = "core") -> None:
        check_size("hidden_size", hidden_size)
        if not isinstance(proj_size, (int, np.integer)) or proj_size < 0 or proj_size >= hidden_size:
            raise ValueError(f"proj_size: expected an integer in [0, hidden_size = {hidden_size}), "
                             f"got {proj_size!r}")
        self.proj_size, self.peephole, self.coupled = int(proj_size), bool(peephole), bool(coupled)
        super().__init__(_LstmKind(self.proj_size, self.peephole, self.coupled), input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         merge_mode, dtype, seed, backend)


class GRU(_RecurrentLayer):
    """Multi-layer GRU, as torch.nn.GRU; ``linear_before_reset=False`` gives Cho et al. 2014's
    candidate (ONNX linear_before_reset=0, Keras reset_after=False)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 linear_before_reset: bool = True, merge_mode: str = "concat",
                 dtype: DTypeLike = np.float32, seed: int | None = None,
                 backend: str = "core") -> None:
        self.linear_before_reset = bool(linear_before_reset)
        super().__init__(_GruKind(self.linear_before_reset), input_size, hidden_size, num_layers,
                         bias, batch_first, dropout, bidirectional, merge_mode, dtype, seed, backend)


class RNN(_RecurrentLayer):
    """Multi-layer Elman RNN with tanh or relu, as torch.nn.RNN."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, merge_mode: str = "concat",
                 dtype: DTypeLike = np.float32, seed: int | None = None,
                 backend: str = "core") -> None:
        self.nonlinearity = nonlinearity
        super().__init__(_RnnKind(nonlinearity), input_size, hidden_size, num_layers, bias,
                         batch_first, dropout, bidirectional, merge_mode, dtype, seed, backend)
