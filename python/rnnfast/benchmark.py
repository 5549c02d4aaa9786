"""``rnnfast bench``: rnnfast against the NumPy reference, PyTorch and ONNX Runtime, side by side.

What is measured
----------------
Cases (the grid below is the one place it is defined): whole sequences through the compiled kernels
(``rnnfast._core.<cell>_forward`` / ``_backward``), a 2-layer bidirectional LSTM through the layer
API (``rnnfast.LSTM``), and one step through the drop-in cells (``rnnfast.lstm_cell`` /
``gru_cell``). Modes: ``forward`` (inference: no cache, torch without autograd) and ``train`` (a
training step: forward keeping the cache, then backward giving dx, dh0 (dc0) and every weight
gradient; torch through autograd with the input and initial states requiring gradients too, so
both compute the same tensors). ONNX Runtime has no training, so it is timed in ``forward`` only.

Protocol
--------
1. Every contender gets the same float32 weights (PyTorch's layout; ONNX's gate order i,o,f,c for
   the LSTM and z,r,h with ``linear_before_reset=1`` for the GRU is derived from it) and the same
   inputs, initial states and output gradients.
2. Before anything is timed, every contender runs once and its outputs (forward) or gradients
   (train) are compared with the NumPy reference run in float64 on the same float32 values, with
   the project's float32 tolerances (``rnnfast.check.TOLERANCES``). A contender that disagrees is
   *refused*: it is not timed, the table says WRONG and the command exits with status 1.
3. Warm-up rounds, then ``repeats`` timed rounds. The competitors are interleaved run by run
   (rnnfast, torch, ORT, rnnfast, torch, ...), with a pause between runs (``_SETTLE_S``), so that
   drift of a shared machine hits all of them alike. A call shorter than ``min_time`` is repeated
   within a run (each contender's number of calls per run is set from its warm-up rounds, which
   repeat a short call for ``min_time / 2`` and keep the time per call after the first). The figure
   is the median over runs of the time per call. The NumPy reference is slow, and its BLAS threads
   would slow whoever ran next: it is timed after the others, at most ``ref_repeats`` runs, and
   the timing of each case and mode starts ``_BLAS_SPIN_S`` after the last BLAS call.
4. Every library runs with the same number of threads: rnnfast (OpenMP), torch
   (``torch.set_num_threads``), ONNX Runtime (``intra_op_num_threads``) and NumPy's BLAS (the
   reference and the sgemm yardstick).
5. The machine's yardstick, measured in the same run (half before the cases, half after): NumPy's
   float32 matmul at n x n x n. Achieved GFLOP/s counts the GEMM flops only: forward
   2*T*B*G*H*(I+H) per layer and direction (G gates), a training step 3x that.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import dataclasses
import gc
import importlib
import importlib.metadata
import math
import os
import platform
import shlex
import sys
import time
from typing import Any, Callable, Iterable, Sequence, TextIO

import numpy as np

from . import _core
from .check import TOLERANCES, relative_error

__all__ = [
    "Case",
    "Report",
    "Result",
    "Settings",
    "add_arguments",
    "add_bench_parser",
    "geomean",
    "grid",
    "main",
    "prepare_case",
    "read_csv",
    "run",
    "thread_limits",
]

# ----------------------------------------------------------------------------------------------
# The grid (issue 5). Shapes are (B, T, H) with I = H, or (B, T, I, H).

SEQUENCE_SHAPES = ((1, 100, 128), (16, 100, 256), (64, 50, 512), (128, 25, 1024))
LAYER_SHAPE = (32, 100, 256)  # a 2-layer bidirectional LSTM through the layer API
CELL_SHAPE = (1, 256)  # (B, H): one step through the drop-in cell
QUICK_SEQUENCE_SHAPES = ((1, 6, 16), (3, 5, 24))  # --quick: a smoke test, not a measurement
QUICK_LAYER_SHAPE = (2, 5, 16)
QUICK_CELL_SHAPE = (1, 16)

CELLS = ("lstm", "gru")
KINDS = ("sequence", "layer", "cell")
COMPETITORS = ("torch", "onnxruntime", "reference")  # rnnfast is always timed
CONTENDERS = ("rnnfast",) + COMPETITORS  # also the order of a run's interleaving
DISPLAY = {"rnnfast": "rnnfast", "torch": "torch", "onnxruntime": "ORT", "reference": "ref"}
GATES = {"lstm": 4, "gru": 3}

# Torch's gate blocks in ONNX's order: ONNX LSTM is i,o,f,c (torch i,f,g,o); GRU z,r,h (torch r,z,n).
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}

# Result statuses.
OK = "ok"  # agreed with the reference; timed
WRONG = "wrong"  # disagreed with the reference: refused, not timed
FAILED = "failed"  # raised an exception while being built or run
ABSENT = "absent"  # not importable
NA = "n/a"  # has no such mode (ONNX Runtime has no training)
UNTIMED = "untimed"  # verified but not timed (the reference with ref_repeats = 0)

# Pause between two contenders' runs, long enough for the thread pools of the one that just ran
# (libgomp spins for milliseconds by default) to fall asleep: a run that starts while another
# library's threads still spin shares the cores with them (measured: rnnfast's LSTM forward 12 ms
# alone, 41 ms right after ONNX Runtime). ONNX Runtime runs with its defaults, its idle workers
# spinning: with session.intra_op.allow_spinning = 0 (which this benchmark set until 2026-12-07) its
# LSTM and GRU took 1.03x-1.56x the time at the grid's sequence shapes and 1.9x-3.1x at the cell
# steps (Zen 4, 2 threads). Its pool spins for about 50 ms after a call: the worker's CPU time over
# 25 ms windows after the last call read 0.8-1.2, 0.8-1.2, then 0 cores.
_SETTLE_S = 0.1
# NumPy's OpenBLAS keeps its worker threads spinning for 2^28 TSC cycles after every call (about
# 0.11 s here) before they sleep. The reference, the float64 judge and the sgemm yardstick all call
# it, so each case and mode waits this long before its first run: rnnfast's lstm_cell (B=1, H=256)
# took 120-855 us per call in the first 0.1 s after a 1024^3 sgemm, 77-91 us from 0.12 s on.
_BLAS_SPIN_S = 0.15


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the grid: a cell kind, how it is driven and its sizes."""

    kind: str  # "sequence" (one kernel call), "layer" (the layer API), "cell" (one step)
    cell: str  # "lstm" | "gru"
    B: int
    T: int
    I: int  # noqa: E741
    H: int
    layers: int = 1
    directions: int = 1

    @property
    def label(self) -> str:
        size = f"H={self.H}" if self.I == self.H else f"I={self.I} H={self.H}"
        if self.kind == "cell":
            return f"{self.cell}_cell B={self.B} {size}"
        stack = ""
        if self.layers > 1 or self.directions > 1:
            stack = f" {self.layers}-layer" + (" bidir" if self.directions == 2 else "")
        return f"{self.cell}{stack} B={self.B} T={self.T} {size}"

    @property
    def modes(self) -> tuple[str, ...]:
        return ("forward",) if self.kind == "cell" else ("forward", "train")

    def flops(self, mode: str) -> float:
        """GEMM flops of one call: 2*T*B*G*H*(I_layer + H) per layer and direction; train 3x."""
        G, total = GATES[self.cell], 0
        for layer in range(self.layers):
            width = self.I if layer == 0 else self.directions * self.H
            total += self.directions * 2 * self.T * self.B * G * self.H * (width + self.H)
        return float(total * (3 if mode == "train" else 1))


def _positive_ints(text: str, counts: tuple[int, ...], expected: str) -> tuple[int, ...]:
    """The comma-separated integers of ``text``, as many as one of ``counts``, all >= 1; else an
    ArgumentTypeError "{expected} of positive integers, got {text!r}"."""
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) not in counts or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"{expected} of positive integers, got {text!r}")
    return dims


def parse_cell_shape(text: str) -> tuple[int, int]:
    """"B,H" -> (B, H): a cell step of B rows, I = H."""
    return _positive_ints(text, (2,), "cell shape: expected B,H")  # type: ignore[return-value]


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """"B,T,H" (I = H) or "B,T,I,H" -> (B, T, I, H)."""
    dims = _positive_ints(text, (3, 4), "shape: expected B,T,H or B,T,I,H")
    return (dims[0], dims[1], dims[2], dims[2]) if len(dims) == 3 else dims  # type: ignore[return-value]


def grid(cells: Sequence[str] = CELLS, kinds: Sequence[str] = KINDS,
         shapes: Sequence[tuple[int, int, int, int]] | None = None, quick: bool = False,
         cell_shapes: Sequence[tuple[int, int]] | None = None) -> list[Case]:
    """The cases to run: sequences of every shape for each cell, the 2-layer bidirectional LSTM
    (when "lstm" is among ``cells``), a cell step of every cell shape for each cell.

    ``shapes`` [(B, T, I, H)] replaces the sequence shapes of the grid (or of the quick grid),
    ``cell_shapes`` [(B, H)] its cell step.
    """
    if shapes is None:
        shapes = [(B, T, H, H) for B, T, H in (QUICK_SEQUENCE_SHAPES if quick else SEQUENCE_SHAPES)]
    LB, LT, LH = QUICK_LAYER_SHAPE if quick else LAYER_SHAPE
    if cell_shapes is None:
        cell_shapes = [QUICK_CELL_SHAPE if quick else CELL_SHAPE]
    cases = []
    if "sequence" in kinds:
        cases += [Case("sequence", cell, B, T, I, H) for cell in cells for B, T, I, H in shapes]
    if "layer" in kinds and "lstm" in cells:
        cases.append(Case("layer", "lstm", LB, LT, LH, LH, layers=2, directions=2))
    if "cell" in kinds:
        cases += [Case("cell", cell, B, 1, H, H) for cell in cells for B, H in cell_shapes]
    return cases


# ----------------------------------------------------------------------------------------------
# Problems: the same weights and data for every contender.

@dataclasses.dataclass
class Problem:
    """Weights and data of one case, in PyTorch's names and layout.

    params : ``weight_ih_l0`` [G*H, I], ``weight_hh_l0`` [G*H, H], ``bias_ih_l0``, ``bias_hh_l0``
        [G*H], for every layer (``_l1``...) and the reverse direction (``_reverse``).
    data : x [T, B, I], h0 [L*D, B, H], dy [T, B, D*H], dh_n [L*D, B, H]; LSTM: c0, dc_n like h0.
    """

    params: dict[str, np.ndarray]
    data: dict[str, np.ndarray]

    def astype(self, dtype: Any) -> Problem:
        return Problem({k: v.astype(dtype) for k, v in self.params.items()},
                       {k: v.astype(dtype) for k, v in self.data.items()})


def make_problem(case: Case, seed: int = 0) -> Problem:
    """Random float32 weights ~ U(+-1/sqrt(H)) (PyTorch's initialisation), x, h0, c0 ~ U(+-1),
    output gradients ~ N(0, 1)."""
    rng = np.random.default_rng([seed, *map(ord, case.label)])
    G, H, L, D = GATES[case.cell], case.H, case.layers, case.directions
    bound = 1.0 / math.sqrt(H)

    def uniform(shape, scale):
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    params = {}
    for layer in range(L):
        width = case.I if layer == 0 else D * H
        for suffix in ("", "_reverse")[:D]:
            params[f"weight_ih_l{layer}{suffix}"] = uniform((G * H, width), bound)
            params[f"weight_hh_l{layer}{suffix}"] = uniform((G * H, H), bound)
            params[f"bias_ih_l{layer}{suffix}"] = uniform((G * H,), bound)
            params[f"bias_hh_l{layer}{suffix}"] = uniform((G * H,), bound)
    states = ("h", "c") if case.cell == "lstm" else ("h",)
    data = {"x": uniform((case.T, case.B, case.I), 1.0),
            "dy": rng.standard_normal((case.T, case.B, D * H)).astype(np.float32)}
    for s in states:
        data[f"{s}0"] = uniform((L * D, case.B, H), 1.0)
        data[f"d{s}_n"] = rng.standard_normal((L * D, case.B, H)).astype(np.float32)
    return Problem(params, data)


# ----------------------------------------------------------------------------------------------
# Contenders. Each returns its results as a dict of arrays with the same names and shapes as every
# other contender of the case: forward -> y [T, B, D*H] (not for a cell step), h_n [L*D, B, H],
# c_n (LSTM); train -> dx, dh0, dc0 (LSTM) and every parameter gradient under PyTorch's name.

@dataclasses.dataclass
class Contender:
    name: str
    forward: Callable[[], dict[str, np.ndarray]]
    train: Callable[[], dict[str, np.ndarray]] | None = None
    note: str = ""  # why ``train`` is None


_KERNEL_GRADS = {"dw_ih": "weight_ih_l0", "dw_hh": "weight_hh_l0", "db_ih": "bias_ih_l0",
                 "db_hh": "bias_hh_l0"}


def _state_names(case: Case) -> tuple[str, ...]:
    return ("h", "c") if case.cell == "lstm" else ("h",)


def kernel_contender(name: str, module: Any, case: Case, problem: Problem) -> Contender:
    """``module.<cell>_forward`` / ``_backward`` (``rnnfast._core`` or ``rnnfast.reference``) on
    one layer and direction; for a cell step, forward only and no ``y``."""
    d, p, states = problem.data, problem.params, _state_names(case)
    weights = tuple(p[f"{w}_l0"] for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    x, s0 = d["x"], tuple(d[f"{s}0"][0] for s in states)
    ds_n = tuple(d[f"d{s}_n"][0] for s in states)
    forward_fn = getattr(module, f"{case.cell}_forward")
    backward_fn = getattr(module, f"{case.cell}_backward")
    step = case.kind == "cell"

    def forward():
        y, *s_n, _ = forward_fn(x, *s0, *weights)
        out = {f"{s}_n": v[None] for s, v in zip(states, s_n)}
        return out if step else {"y": y, **out}

    def train():
        y, *s_n, cache = forward_fn(x, *s0, *weights, training=True)
        g = backward_fn(d["dy"], *ds_n, x, *s0, *weights[:2], cache)
        out = {"dx": g["dx"], **{f"d{s}0": g[f"d{s}0"][None] for s in states}}
        return out | {torch_name: g[k] for k, torch_name in _KERNEL_GRADS.items()}

    return Contender(name, forward, None if step else train)


def cell_contender(case: Case, problem: Problem) -> Contender:
    """The drop-in ``rnnfast.lstm_cell`` / ``gru_cell``, one step."""
    import rnnfast

    d, p, states = problem.data, problem.params, _state_names(case)
    weights = tuple(p[f"{w}_l0"] for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    x, s0 = d["x"][0], tuple(d[f"{s}0"][0] for s in states)
    fn = getattr(rnnfast, f"{case.cell}_cell")

    def forward():
        s_n = fn(x, *s0, *weights)
        s_n = s_n if case.cell == "lstm" else (s_n,)
        return {f"{s}_n": v[None] for s, v in zip(states, s_n)}

    return Contender("rnnfast", forward)


def layer_contender(name: str, backend: str, case: Case, problem: Problem) -> Contender:
    """``rnnfast.LSTM`` / ``GRU`` (``backend`` "core" or "reference") with the problem's weights;
    one object in eval mode for the forward, one in training mode for the training step."""
    import rnnfast

    d, states = problem.data, _state_names(case)
    dtype = d["x"].dtype

    def build(training):
        layer = getattr(rnnfast, case.cell.upper())(
            case.I, case.H, num_layers=case.layers, bidirectional=case.directions == 2,
            dtype=dtype, backend=backend)
        layer.load_state_dict(problem.params)
        return layer.train(training)

    inference, trainer = build(False), build(True)
    s0 = tuple(d[f"{s}0"] for s in states)
    s0 = s0 if case.cell == "lstm" else s0[0]
    ds_n = tuple(d[f"d{s}_n"] for s in states)
    ds_n = ds_n if case.cell == "lstm" else ds_n[0]

    def outputs(y, s_n):
        s_n = s_n if case.cell == "lstm" else (s_n,)
        return {"y": y, **{f"{s}_n": v for s, v in zip(states, s_n)}}

    def forward():
        return outputs(*inference(d["x"], s0))

    def train():
        trainer.zero_grad()
        trainer(d["x"], s0)
        dx, ds0 = trainer.backward(d["dy"], ds_n)
        ds0 = ds0 if case.cell == "lstm" else (ds0,)
        return {"dx": dx, **{f"d{s}0": v for s, v in zip(states, ds0)}, **trainer.grads}

    return Contender(name, forward, train)


def torch_contender(case: Case, problem: Problem) -> Contender:
    """torch.nn.LSTM / GRU (any layers, directions) or LSTMCell / GRUCell, with the problem's
    weights. Forward: a module in eval mode whose parameters do not require gradients. Training
    step: a second module in training mode; autograd from (y, h_n[, c_n]) with the problem's
    output gradients, the input and initial states requiring gradients like the parameters."""
    import torch

    d, states = problem.data, _state_names(case)
    step = case.kind == "cell"
    cls = getattr(torch.nn, case.cell.upper() + ("Cell" if step else ""))

    def build():
        if step:
            module = cls(case.I, case.H)
            module.load_state_dict({k.removesuffix("_l0"): torch.from_numpy(v)
                                    for k, v in problem.params.items()})
        else:
            module = cls(case.I, case.H, num_layers=case.layers,
                         bidirectional=case.directions == 2)
            module.load_state_dict({k: torch.from_numpy(v) for k, v in problem.params.items()})
        return module

    def tensors(names, index=None):
        out = tuple(torch.from_numpy(d[n] if index is None else d[n][index]) for n in names)
        return out if case.cell == "lstm" else out[0]

    inference = build().eval().requires_grad_(False)
    if step:
        x, s0 = torch.from_numpy(d["x"][0]), tensors([f"{s}0" for s in states], 0)

        def forward():
            s_n = inference(x, s0)
            s_n = s_n if case.cell == "lstm" else (s_n,)
            return {f"{s}_n": v.numpy()[None] for s, v in zip(states, s_n)}

        return Contender("torch", forward)

    x, s0 = torch.from_numpy(d["x"]), tensors([f"{s}0" for s in states])

    def forward():
        y, s_n = inference(x, s0)
        s_n = s_n if case.cell == "lstm" else (s_n,)
        return {"y": y.numpy(), **{f"{s}_n": v.numpy() for s, v in zip(states, s_n)}}

    trainer = build().train()
    params = dict(trainer.named_parameters())
    leaves = {n: torch.from_numpy(d[n]).requires_grad_() for n in ("x", *(f"{s}0" for s in states))}
    out_grads = [torch.from_numpy(d[n]) for n in ("dy", *(f"d{s}_n" for s in states))]

    def train():
        trainer.zero_grad(set_to_none=True)
        for leaf in leaves.values():
            leaf.grad = None
        s0_t = tuple(leaves[f"{s}0"] for s in states)
        y, s_n = trainer(leaves["x"], s0_t if case.cell == "lstm" else s0_t[0])
        s_n = s_n if case.cell == "lstm" else (s_n,)
        torch.autograd.backward([y, *s_n], out_grads)
        return ({f"d{n}": t.grad.numpy() for n, t in leaves.items()}
                | {n: t.grad.numpy() for n, t in params.items()})

    return Contender("torch", forward, train)


def _onnx_gates(w: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """Rows of a [G*H, ...] weight (or [G*H] bias) regrouped from torch's gate order into ``order``."""
    blocks = np.split(w, len(order))
    return np.concatenate([blocks[k] for k in order])


def onnx_model(case: Case, problem: Problem, *, gate_order: Sequence[int] | None = None,
               linear_before_reset: int = 1):
    """One ONNX LSTM / GRU node per layer (direction "forward" or "bidirectional") with the
    problem's weights as initializers; between layers and at the end, Y [T, D, B, H] becomes
    [T, B, D*H]. Inputs x, h0_l<k> [D, B, H] (c0_l<k>); outputs y (not for a cell step), h_n, c_n.
    ``gate_order`` and ``linear_before_reset`` are parameters so that a test can get them wrong."""
    from onnx import TensorProto, helper, numpy_helper

    order = ONNX_GATE_ORDER[case.cell] if gate_order is None else gate_order
    lstm, (T, B, H, L, D) = case.cell == "lstm", (case.T, case.B, case.H, case.layers, case.directions)
    p, states = problem.params, _state_names(case)
    f32 = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("x", f32, [T, B, case.I])]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array([T, B, D * H], np.int64), "shape_tbh")]
    nodes, finals, layer_in = [], {s: [] for s in states}, "x"
    for layer in range(L):
        suffixes = ("", "_reverse")[:D]

        def stacked(fn, suffixes=suffixes, layer=layer):
            return np.stack([fn(s) for s in suffixes])

        def gates(name, layer=layer):
            return lambda s: _onnx_gates(p[f"{name}_l{layer}{s}"], order)

        biases = (gates("bias_ih"), gates("bias_hh"))
        inits += [numpy_helper.from_array(stacked(gates("weight_ih")), f"W{layer}"),
                  numpy_helper.from_array(stacked(gates("weight_hh")), f"R{layer}"),
                  numpy_helper.from_array(stacked(lambda s: np.concatenate([b(s) for b in biases])),
                                          f"B{layer}")]
        for s in states:
            inputs.append(helper.make_tensor_value_info(f"{s}0_l{layer}", f32, [D, B, H]))
            finals[s].append(f"{s}_n" if L == 1 else f"{s}_n_l{layer}")
        last, step = layer == L - 1, case.kind == "cell"
        y_raw = "" if (last and step) else f"Y{layer}"
        attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
        if not lstm:
            attrs["linear_before_reset"] = linear_before_reset
        node_in = [layer_in, f"W{layer}", f"R{layer}", f"B{layer}", "", *(f"{s}0_l{layer}" for s in states)]
        nodes.append(helper.make_node("LSTM" if lstm else "GRU", node_in,
                                      [y_raw, *(finals[s][-1] for s in states)], **attrs))
        if y_raw:
            layer_in = "y" if last else f"X{layer + 1}"
            if D == 1:
                nodes.append(helper.make_node("Squeeze", [y_raw, "axis1"], [layer_in]))
            else:
                nodes.append(helper.make_node("Transpose", [y_raw], [f"{y_raw}t"], perm=[0, 2, 1, 3]))
                nodes.append(helper.make_node("Reshape", [f"{y_raw}t", "shape_tbh"], [layer_in]))
    if L > 1:
        nodes += [helper.make_node("Concat", finals[s], [f"{s}_n"], axis=0) for s in states]
    outputs = [] if case.kind == "cell" else [helper.make_tensor_value_info("y", f32, [T, B, D * H])]
    outputs += [helper.make_tensor_value_info(f"{s}_n", f32, [L * D, B, H]) for s in states]
    graph = helper.make_graph(nodes, f"rnnfast_bench_{case.cell}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                              producer_name="rnnfast.benchmark")
    model.ir_version = 8  # opset 14's IR version: any ONNX Runtime of the last years reads it
    return model


def onnx_contender(case: Case, problem: Problem, threads: int, **model_options) -> Contender:
    """An ONNX Runtime session (CPU, ``threads`` intra-op threads, full graph optimisation) of
    ``onnx_model(case, problem, **model_options)``."""
    import onnx
    import onnxruntime as ort

    model = onnx_model(case, problem, **model_options)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    d, D = problem.data, case.directions
    feeds = {"x": d["x"]}
    for layer in range(case.layers):
        feeds |= {f"{s}0_l{layer}": d[f"{s}0"][layer * D:(layer + 1) * D]
                  for s in _state_names(case)}
    names = [o.name for o in session.get_outputs()]

    def forward():
        return dict(zip(names, session.run(names, feeds)))

    return Contender("onnxruntime", forward, note="ONNX Runtime has no training")


def build_contender(name: str, case: Case, problem: Problem, threads: int) -> Contender:
    """The contender ``name`` (one of CONTENDERS) for ``case``."""
    from . import _core, reference

    if name == "rnnfast":
        if case.kind == "layer":
            return layer_contender(name, "core", case, problem)
        return cell_contender(case, problem) if case.kind == "cell" else \
            kernel_contender(name, _core, case, problem)
    if name == "reference":
        if case.kind == "layer":
            return layer_contender(name, "reference", case, problem)
        return kernel_contender(name, reference, case, problem)
    if name == "torch":
        return torch_contender(case, problem)
    if name == "onnxruntime":
        return onnx_contender(case, problem, threads)
    raise ValueError(f"contender: expected one of {CONTENDERS}, got {name!r}")


def judge(case: Case, problem: Problem) -> Contender:
    """What correct means: the NumPy reference in float64 on the problem's float32 values."""
    return build_contender("reference", case, problem.astype(np.float64), threads=1)


_MODULES = {"torch": ("torch",), "onnxruntime": ("onnx", "onnxruntime")}


def missing_module(name: str) -> str | None:
    """Why contender ``name`` cannot run here (a module that does not import), or None."""
    for module in _MODULES.get(name, ()):
        try:
            importlib.import_module(module)
        except ImportError as err:
            return f"{module} not importable ({err})"
    return None


# ----------------------------------------------------------------------------------------------
# Verification and timing.

@dataclasses.dataclass
class Result:
    """One contender in one mode of one case: its verification and its timed runs."""

    case: Case
    mode: str
    contender: str
    status: str
    error: float = math.nan  # max relative error vs the reference (forward: outputs; train: gradients)
    times: list[float] = dataclasses.field(default_factory=list)  # seconds per call, one per run
    calls: int = 1  # calls per timed run
    note: str = ""
    warm_s: float = math.inf  # seconds per call: verification, then warm-up rounds (_warm_time)
    fn: Callable[[], Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def timed(self) -> bool:
        return self.status == OK and bool(self.times)

    @property
    def median_ms(self) -> float:
        return float(np.median(self.times)) * 1e3 if self.times else math.nan

    @property
    def min_ms(self) -> float:
        return min(self.times) * 1e3 if self.times else math.nan

    @property
    def gflops(self) -> float:
        return self.case.flops(self.mode) / (self.median_ms * 1e6) if self.times else math.nan


def tolerance(mode: str) -> float:
    """The float32 tolerance of ``rnnfast check`` for outputs (forward) or gradients (train)."""
    return TOLERANCES[("float32", "forward" if mode == "forward" else "backward")]


def compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> tuple[float, str]:
    """(worst relative error, the tensor it is in) over the tensors of ``expected``; a missing
    tensor, a wrong shape or a NaN counts as an infinite error."""
    worst, where = 0.0, ""
    for name, want in expected.items():
        have = got.get(name)
        if have is None or np.shape(have) != want.shape:
            shape = None if have is None else np.shape(have)
            return math.inf, f"{name}: expected shape {want.shape}, got {shape}"
        error = relative_error(have, want)
        error = math.inf if math.isnan(error) else error
        if error > worst:
            worst, where = error, name
    return worst, where


def verify(contender: Contender, mode: str, expected: dict[str, np.ndarray], case: Case) -> Result:
    """Run ``contender`` once in ``mode`` and compare it with ``expected``; the Result is OK (and
    carries the function to time) only if every tensor is within ``tolerance(mode)``."""
    fn = contender.forward if mode == "forward" else contender.train
    if fn is None:
        return Result(case, mode, contender.name, NA, note=contender.note)
    try:
        start = time.perf_counter()
        got = fn()
        seconds = time.perf_counter() - start
        error, where = compare(got, expected)
    except Exception as err:  # noqa: BLE001 - a competitor's failure is reported, not fatal
        return Result(case, mode, contender.name, FAILED, note=f"{type(err).__name__}: {err}")
    if not error <= tolerance(mode):
        return Result(case, mode, contender.name, WRONG, error,
                      note=f"disagrees with the reference: {where} relative error {error:.2e} > "
                           f"{tolerance(mode):.0e}; not timed")
    return Result(case, mode, contender.name, OK, error, fn=fn, warm_s=seconds)


def _time_calls(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _warm_time(fn: Callable[[], Any], budget: float) -> float:
    """Seconds per call of ``fn`` once warm: calls for ``budget`` seconds (at least one), timed
    without the first unless there is only one. Timing a single call instead made a cell step's
    runs about 3x shorter than ``min_time``: right after a pause a step costs twice as much for its
    first ten calls or so (cold caches on a shared machine), so one call over-estimates the time
    per call, and in runs that short those slow calls weighed 20-30% of the median (lstm_cell B=1,
    H=256: 60-75 us per call in 50-140-call runs, 40-48 us in steady state)."""
    start = time.perf_counter()
    fn()
    first_end = end = time.perf_counter()
    calls = 0
    while end - start < budget:
        fn()
        calls += 1
        end = time.perf_counter()
    return (end - first_end) / calls if calls else end - start


def _settle(seconds: float = _SETTLE_S) -> None:
    """The pause between two contenders' runs, as a busy wait on this thread. A sleep would let
    the machine go idle, and then whoever runs next pays to wake it: torch's LSTM at B=1, T=6,
    H=16 took 1.0-1.5 ms per call for its first ~8 calls after a 50 ms sleep, 0.15 ms when warm;
    after a 50 ms busy wait only its first call was slow (0.5 ms). ``_run`` makes that call untimed."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _run(r: Result) -> float:
    """One timed run of ``r`` right after a pause: one untimed call first (it wakes the thread
    pool the pause let sleep) when a call is shorter than the pause, so it costs no more than
    the pause does."""
    _settle()
    if r.warm_s < _SETTLE_S:
        r.fn()
    return _time_calls(r.fn, r.calls)


def time_interleaved(results: Sequence[Result], settings: Settings) -> None:
    """Warm up, then time the OK results of one case and mode in interleaved runs (in place)."""
    live = [r for r in results if r.status == OK]
    for r in live:
        if r.contender == "reference" and settings.ref_repeats == 0:
            r.status, r.note = UNTIMED, "verified, not timed (--ref-repeats 0)"
    live = [r for r in live if r.status == OK]
    if not live:
        return
    gc.disable()  # no collection inside a timed run (collecting first costs 0.1 s with torch loaded)
    try:
        _settle(_BLAS_SPIN_S)  # the verification just ran the reference (NumPy's BLAS)
        for _ in range(settings.warmup):
            for r in live:
                if r.contender != "reference":  # its verification run was its warm-up
                    r.warm_s = min(r.warm_s, _warm_time(r.fn, settings.min_time / 2))
        for r in live:
            r.calls = max(1, math.ceil(settings.min_time / max(r.warm_s, 1e-9)))
        # The competitors interleaved run by run; the NumPy reference after them, on its own: its
        # BLAS threads spin long after a call and would slow whichever contender ran next
        # (measured: rnnfast's LSTM forward at B=16, H=256: 12.9 ms vs 24.8 ms after the reference).
        rivals = [r for r in live if r.contender != "reference"]
        for run_index in range(settings.repeats):
            for r in rivals:
                r.times.append(_run(r))
        for r in live:
            if r.contender == "reference":
                for _ in range(min(settings.repeats, settings.ref_repeats)):
                    r.times.append(_run(r))
    finally:
        gc.enable()
    for r in live:
        r.fn = None
        if r.contender == "reference" and len(r.times) < settings.repeats:
            r.note = f"{len(r.times)} timed runs (slow)"


# ----------------------------------------------------------------------------------------------
# Threads and the sgemm yardstick.

def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _openblas_thread_functions() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get, set) of the thread count of the OpenBLAS that NumPy has loaded, through ctypes (what
    threadpoolctl does; Linux only), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps
                            if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "64_"), ("openblas", "")):
            getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            if getter is not None and setter is not None:
                setter.argtypes, getter.restype = [ctypes.c_int], ctypes.c_int
                return getter, setter
    return None


@contextlib.contextmanager
def thread_limits(n: int, with_torch: bool):
    """Run every library on ``n`` threads: rnnfast, torch (``with_torch``) and NumPy's BLAS;
    restore the previous counts on exit. Yields how NumPy's BLAS threads were set."""
    import rnnfast

    restore = [(rnnfast.set_num_threads, rnnfast.get_num_threads())]
    if with_torch:
        import torch

        restore.append((torch.set_num_threads, torch.get_num_threads()))
    blas = _openblas_thread_functions()
    how = "NumPy BLAS threads not controlled (not OpenBLAS)"
    if blas is not None:
        restore.append((blas[1], blas[0]()))
        how = "NumPy BLAS (OpenBLAS) threads set"
    try:
        for setter, _ in restore:
            setter(n)
        yield how
    finally:
        for setter, previous in restore:
            setter(previous)


def fma_peak_runs(runs: int, threads: int) -> list[float]:
    """GFLOP/s of ``runs`` regions of float multiply-adds in registers on ``threads`` threads, with
    the vectors of rnnfast's GEMM kernels (``rnnfast._core.fma_peak_gflops``): the ceiling no
    kernel of this build can pass, where the sgemm yardstick is only another library's GEMM. Each
    run comes after the pause between contenders: right after the sgemm, OpenBLAS's spinning
    workers took a core from the region (176 GFLOP/s against 234 on 2 threads, Zen 4)."""
    out = []
    for _ in range(runs):
        _settle()
        out.append(_core.fma_peak_gflops(threads, 0.02))
    return out


def sgemm_times(n: int, runs: int, seed: int = 0) -> list[float]:
    """Seconds of ``runs`` NumPy float32 (n, n) @ (n, n) products after one warm-up."""
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return times


# ----------------------------------------------------------------------------------------------
# A run.

@dataclasses.dataclass(frozen=True)
class Settings:
    threads: int
    repeats: int = 7  # timed runs per contender (median)
    warmup: int = 1  # untimed interleaved rounds before them
    ref_repeats: int = 3  # at most this many timed runs for the NumPy reference
    min_time: float = 0.02  # seconds: a run repeats a short call until it lasts about this long
    against: tuple[str, ...] = COMPETITORS
    seed: int = 0
    sgemm_size: int = 2048
    sgemm_runs: int = 6  # half before the cases, half after (and one before and after each case)


@dataclasses.dataclass
class Report:
    settings: Settings
    results: list[Result]
    sgemm: list[float]  # seconds per product, all of the run's
    blas_threads: str
    command: str
    # Seconds per product measured right before and after each case: a case's "% of sgemm" is
    # taken against these, so that a machine whose speed drifts during the run (a shared host)
    # is compared with itself.
    case_sgemm: dict[Case, list[float]] = dataclasses.field(default_factory=dict)
    # The round trip of a cache line between the cores of rnnfast's first two threads, in ns, as
    # last measured by the end of each case (rnnfast._core.core_round_trip_ns; 0: not measured).
    # A virtual machine's vCPUs can move between nearby and distant host cores during a run, and
    # small barrier-bound sequences run slower far apart (bench/RESULTS.md, 2026-12-07).
    case_round_trip_ns: dict[Case, int] = dataclasses.field(default_factory=dict)
    # GFLOP/s of the FMA ceiling's runs (fma_peak_runs), before and after the cases; empty: not
    # measured. The best run is the ceiling: the host's other work can only slow a run down.
    peak: list[float] = dataclasses.field(default_factory=list)

    @property
    def sgemm_gflops(self) -> float:
        """Median sgemm throughput over the run."""
        return 2 * self.settings.sgemm_size ** 3 / float(np.median(self.sgemm)) / 1e9

    def case_sgemm_gflops(self, case: Case) -> float:
        """The denominator of a case's "% of sgemm": the median of the products timed next to
        it, else the run's median."""
        times = self.case_sgemm.get(case)
        if not times:
            return self.sgemm_gflops
        return 2 * self.settings.sgemm_size ** 3 / float(np.median(times)) / 1e9

    @property
    def peak_gflops(self) -> float:
        """The FMA ceiling: its best run, NaN if it was not measured."""
        return max(self.peak) if self.peak else math.nan

    @property
    def sgemm_best_gflops(self) -> float:
        return 2 * self.settings.sgemm_size ** 3 / min(self.sgemm) / 1e9

    @property
    def cases(self) -> list[Case]:
        return list(dict.fromkeys(r.case for r in self.results))

    def find(self, case: Case, mode: str, contender: str) -> Result | None:
        for r in self.results:
            if r.case == case and r.mode == mode and r.contender == contender:
                return r
        return None

    def speedup(self, case: Case, mode: str, competitor: str) -> float:
        """competitor time / rnnfast time (> 1: rnnfast is faster); NaN unless both were timed."""
        mine, theirs = self.find(case, mode, "rnnfast"), self.find(case, mode, competitor)
        if mine is None or theirs is None or not (mine.timed and theirs.timed):
            return math.nan
        return theirs.median_ms / mine.median_ms

    def sgemm_fraction(self, case: Case, mode: str, contender: str) -> float:
        """contender's GFLOP/s / the sgemm throughput timed next to the case; NaN unless it was
        timed."""
        r = self.find(case, mode, contender)
        if r is None or not r.timed:
            return math.nan
        return r.gflops / self.case_sgemm_gflops(case)

    @property
    def refused(self) -> list[Result]:
        return [r for r in self.results if r.status in (WRONG, FAILED)]


def prepare_case(case: Case, settings: Settings,
                 unavailable: dict[str, str] | None = None) -> list[Result]:
    """Build every contender of ``case`` (rnnfast and ``settings.against``) and verify it in each
    mode against the reference; the OK results carry the function to time. ``unavailable`` maps
    a competitor that cannot run here to the reason (default: ``missing_module``)."""
    if unavailable is None:
        unavailable = {n: why for n in settings.against if (why := missing_module(n)) is not None}
    problem = make_problem(case, settings.seed)
    expected = judge(case, problem)
    want = {"forward": expected.forward(), "train": expected.train() if expected.train else None}
    contenders, results = [], []
    for name in ("rnnfast", *settings.against):
        if name in unavailable:
            results += [Result(case, mode, name, ABSENT, note=unavailable[name]) for mode in case.modes]
            continue
        try:
            contenders.append(build_contender(name, case, problem, settings.threads))
        except Exception as err:  # noqa: BLE001 - reported as FAILED, the run goes on
            if name == "rnnfast":
                raise
            note = f"{type(err).__name__}: {err}"
            results += [Result(case, mode, name, FAILED, note=note) for mode in case.modes]
    for mode in case.modes:
        results += [verify(c, mode, want[mode], case) for c in contenders]
    order = {name: k for k, name in enumerate(CONTENDERS)}
    return sorted(results, key=lambda r: (case.modes.index(r.mode), order[r.contender]))


def run_case(case: Case, settings: Settings, unavailable: dict[str, str]) -> list[Result]:
    """Build, verify and time every contender of ``case`` in each of its modes."""
    results = prepare_case(case, settings, unavailable)
    for mode in case.modes:
        time_interleaved([r for r in results if r.mode == mode], settings)
    return results


def run(cases: Iterable[Case], settings: Settings, command: str = "",
        log: TextIO | None = None) -> Report:
    """Run ``cases``; progress lines go to ``log``."""
    cases = list(cases)
    unavailable = {n: why for n in settings.against if (why := missing_module(n)) is not None}
    results: list[Result] = []
    with thread_limits(settings.threads, "torch" in settings.against and "torch" not in unavailable) as how:
        half = max(1, settings.sgemm_runs // 2)
        sgemm = sgemm_times(settings.sgemm_size, half, settings.seed)
        peak = fma_peak_runs(half, settings.threads)
        case_sgemm, round_trip = {}, {}
        for k, case in enumerate(cases, 1):
            before = sgemm_times(settings.sgemm_size, 1, settings.seed)
            rows = run_case(case, settings, unavailable)
            round_trip[case] = _core.core_round_trip_ns()
            case_sgemm[case] = before + sgemm_times(settings.sgemm_size, 1, settings.seed)
            sgemm += case_sgemm[case]
            results += rows
            if log is not None:
                timed = ", ".join(f"{r.mode} {DISPLAY[r.contender]} {r.median_ms:.3g} ms"
                                  for r in rows if r.timed)
                print(f"[{k}/{len(cases)}] {case.label}: {timed}", file=log, flush=True)
        sgemm += sgemm_times(settings.sgemm_size, settings.sgemm_runs - half, settings.seed)
        peak += fma_peak_runs(settings.sgemm_runs - half, settings.threads)
    return Report(settings, results, sgemm, how, command, case_sgemm, round_trip, peak)


# ----------------------------------------------------------------------------------------------
# Output: table, CSV, Markdown, plot.

def _fmt_ms(r: Result | None) -> str:
    if r is None:
        return "-"
    if r.status == OK and r.times:
        ms = r.median_ms
        text = f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"
        return text + ("*" if r.contender == "reference" and r.note else "")
    return {WRONG: "WRONG", FAILED: "FAILED"}.get(r.status, r.status)


def _fmt_ratio(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.2f}x" if x < 10 else (f"{x:.1f}x" if x < 100 else f"{x:.0f}x")


def table_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table (shared by the terminal and the Markdown output)."""
    against = list(report.settings.against)
    # The competitors' own fraction of sgemm too (not the reference's): how close they run to the
    # machine's GEMM limit bounds how far any kernel can beat them.
    rivals = [n for n in against if n != "reference"]
    header = (["case", "mode"] + [f"{DISPLAY[n]} ms" for n in ("rnnfast", *against)]
              + [f"vs {DISPLAY[n]}" for n in against] + ["GFLOP/s", "% peak", "% sgemm"]
              + [f"{DISPLAY[n]} % sgemm" for n in rivals])
    rows = []
    for case in report.cases:
        for mode in case.modes:
            mine = report.find(case, mode, "rnnfast")
            gflops = mine.gflops if mine is not None and mine.timed else math.nan
            rows.append([case.label, mode]
                        + [_fmt_ms(report.find(case, mode, n)) for n in ("rnnfast", *against)]
                        + [_fmt_ratio(report.speedup(case, mode, n)) for n in against]
                        + ["-" if math.isnan(gflops) else f"{gflops:.1f}",
                           _fmt_pct(gflops / report.peak_gflops),
                           _fmt_sgemm_pct(report, case, mode, "rnnfast")]
                        + [_fmt_sgemm_pct(report, case, mode, n) for n in rivals])
    return header, rows


def _fmt_sgemm_pct(report: Report, case: Case, mode: str, contender: str) -> str:
    return _fmt_pct(report.sgemm_fraction(case, mode, contender))


def _fmt_pct(fraction: float) -> str:
    return "-" if math.isnan(fraction) else f"{100 * fraction:.0f}%"


def geomean(values: Iterable[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def summary_lines(report: Report) -> list[str]:
    """Geometric-mean speed-ups and the goals of issue 5, one line each."""
    grid_cases = [c for c in report.cases if c.kind != "cell"]
    lines = []
    for mode in ("forward", "train"):
        parts = [f"vs {DISPLAY[n]} {_fmt_ratio(geomean(report.speedup(c, mode, n) for c in grid_cases))}"
                 for n in report.settings.against]
        lines.append(f"geometric mean speed-up, {mode} (sequence and layer rows): " + ", ".join(parts))
    if not set(grid()) <= set(report.cases):
        return lines  # the goals are about the default grid
    return lines + [f"goal (issue 5): {text}: {verdict}" for text, verdict in goals(report)]


def _worst(report: Report, cases: Sequence[Case], mode: str, value: Callable[[Case], float],
           target: float, need: Callable[[Case], float] | None = None) -> str:
    """"met" / "MISSED" and the worst row; for a missed goal with ``need``, also the fraction of
    the sgemm yardstick that the worst row would have to reach to meet it, and of the FMA ceiling
    (above 100%: out of reach of any kernel on this machine)."""
    measured = [(value(c), c) for c in cases]
    measured = [(v, c) for v, c in measured if not math.isnan(v)]
    if not measured:
        return "not measured"
    v, c = min(measured, key=lambda vc: vc[0])
    missing = len(cases) - len(measured)
    tail = f"; {missing} row(s) not measured" if missing else ""
    needed = need(c) if v < target and need is not None else math.nan
    if not math.isnan(needed):
        tail += f"; meeting it there needs {100 * needed:.0f}% of sgemm"
        of_peak = needed * report.case_sgemm_gflops(c) / report.peak_gflops
        if not math.isnan(of_peak):
            tail += f", {100 * of_peak:.0f}% of the FMA ceiling"
            if of_peak > 1:
                tail += " (beyond this machine)"
    return f"{'met' if v >= target else 'MISSED'} (worst {v:.2f} at {c.label} {mode}{tail})"


def needed_sgemm_fraction(report: Report, case: Case, mode: str, competitor: str,
                          target: float) -> float:
    """The fraction of the sgemm throughput timed next to ``case`` that rnnfast would need to be
    ``target`` times faster than ``competitor`` there: target * the competitor's GFLOP/s / sgemm's
    (NaN unless the competitor was timed). Above 1, a goal asks for more than the yardstick GEMM
    reaches on the machine: the competitor itself is within 1 / target of it."""
    return target * report.sgemm_fraction(case, mode, competitor)


def goals(report: Report) -> list[tuple[str, str]]:
    """The speed goals of issue 5, each with "met" / "MISSED" and the worst row."""
    rows = [c for c in report.cases if c.kind != "cell"]
    cells = [c for c in report.cases if c.kind == "cell" and (c.B, c.H) == CELL_SHAPE]
    sequences = [c for c in report.cases if c.kind == "sequence"]
    largest_sizes = sorted({c.flops("forward") / GATES[c.cell] for c in sequences})[-2:]
    largest = [c for c in sequences if c.flops("forward") / GATES[c.cell] in largest_sizes]

    def vs(name, mode):
        return lambda c: report.speedup(c, mode, name)

    def sgemm_fraction(mode):
        return lambda c: report.sgemm_fraction(c, mode, "rnnfast")

    def need(name, mode, target):
        return lambda c: needed_sgemm_fraction(report, c, mode, name, target)

    out = [("forward >= 1.25x torch on every shape",
            _worst(report, rows, "forward", vs("torch", "forward"), 1.25,
                   need("torch", "forward", 1.25))),
           ("forward >= 1.0x ORT on every shape",
            _worst(report, rows, "forward", vs("onnxruntime", "forward"), 1.0,
                   need("onnxruntime", "forward", 1.0))),
           ("training step >= 1.2x torch on every shape",
            _worst(report, rows, "train", vs("torch", "train"), 1.2, need("torch", "train", 1.2)))]
    for mode in ("forward", "train"):
        g = geomean(report.speedup(c, mode, "torch") for c in rows)
        out.append((f"geometric mean {mode} >= 1.5x torch",
                    "not measured" if math.isnan(g) else f"{'met' if g >= 1.5 else 'MISSED'} ({g:.2f})"))
        out.append((f"two largest shapes, {mode}: >= 85% of sgemm",
                    _worst(report, largest, mode, sgemm_fraction(mode), 0.85)))
    out.append(("cell step >= 5x torch", _worst(report, cells, "forward", vs("torch", "forward"), 5.0)))
    return out


def format_table(report: Report) -> str:
    """The results as a fixed-width text table, with its notes and summary."""
    header, rows = table_rows(report)
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(cells, widths)))

    out = [preamble(report), "", line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    out += ["", *notes(report), "", *summary_lines(report)]
    return "\n".join(out)


def preamble(report: Report) -> str:
    s = report.settings
    return (f"rnnfast bench: float32, {s.threads} thread(s) for every library; median of {s.repeats} "
            f"interleaved runs after {s.warmup} warm-up round(s); sgemm {s.sgemm_size}^3: "
            f"{report.sgemm_gflops:.1f} GFLOP/s median, {report.sgemm_best_gflops:.1f} best"
            f"{_case_sgemm_range(report)} ({report.blas_threads})"
            + ("" if math.isnan(report.peak_gflops) else
               f"; FMA ceiling of rnnfast's kernels ({_core.build_info()['simd']}, {s.threads} "
               f"thread(s)): {report.peak_gflops:.1f} GFLOP/s, best of {len(report.peak)}"))


def _case_sgemm_range(report: Report) -> str:
    values = [report.case_sgemm_gflops(c) for c in report.case_sgemm]
    return f", {min(values):.1f}-{max(values):.1f} next to the cases" if values else ""


def notes(report: Report) -> list[str]:
    s = report.settings
    out = ["ms: median time per call. vs X: X's time / rnnfast's (> 1: rnnfast is faster). "
           "GFLOP/s and % sgemm: rnnfast's GEMM flops (training 3x forward) / time, and that / the "
           "sgemm throughput timed right before and after the case (the machine's speed can drift "
           "during a run; the median above is over the whole run); X % sgemm: the same for X, "
           "counting the same flops. % peak: rnnfast's GFLOP/s / the FMA ceiling, multiply-adds "
           "in registers with the vectors of rnnfast's GEMM on every thread (csrc/peak.h): no "
           "contender's kernel can pass it.",
           f"Every contender was checked against the NumPy reference (float64) before timing "
           f"(relative tolerance: forward {tolerance('forward'):.0e}, gradients {tolerance('train'):.0e})."]
    if "reference" in s.against and 0 < s.ref_repeats < s.repeats:
        out.append(f"* the NumPy reference is slow: {s.ref_repeats} timed run(s) instead of "
                   f"{s.repeats}.")
    elif "reference" in s.against and s.ref_repeats == 0:
        out.append("untimed: the NumPy reference was run to verify the others, not timed "
                   "(--ref-repeats 0).")
    if "onnxruntime" in s.against:
        out.append("n/a: ONNX Runtime has no training step.")
    trips = [ns for ns in report.case_round_trip_ns.values() if ns > 0]
    if trips:
        out.append(f"Cache-line round trip between the cores of rnnfast's two threads, as last "
                   f"measured by the end of each case: {min(trips)}-{max(trips)} ns (far apart, "
                   f"rnnfast runs small steps on one thread: csrc/parallel.h, CoreDistance).")
    for r in report.results:
        if r.status in (WRONG, FAILED, ABSENT):
            out.append(f"{r.case.label} {r.mode} {DISPLAY[r.contender]}: {r.status}: {r.note}")
    return list(dict.fromkeys(out))


CSV_FIELDS = ("case", "kind", "cell", "layers", "directions", "B", "T", "I", "H", "mode",
              "contender", "status", "runs", "calls_per_run", "median_ms", "min_ms", "speedup",
              "gflops", "sgemm_pct", "max_rel_error", "threads", "note")


def csv_rows(report: Report) -> list[dict[str, Any]]:
    """One row per case, mode and contender (speedup: that contender's time / rnnfast's), after a
    first row for the sgemm yardstick (kind "sgemm", contender "numpy") and, when it was measured,
    one for the FMA ceiling (kind "fma_peak": GFLOP/s only, no time)."""
    n, times = report.settings.sgemm_size, report.sgemm
    rows = [{"case": f"sgemm n={n}", "kind": "sgemm", "mode": "forward", "contender": "numpy",
             "status": OK, "runs": len(times), "calls_per_run": 1,
             "median_ms": f"{float(np.median(times)) * 1e3:.6g}", "min_ms": f"{min(times) * 1e3:.6g}",
             "gflops": f"{report.sgemm_gflops:.4g}", "sgemm_pct": "100",
             "threads": report.settings.threads, "note": report.blas_threads}]
    if report.peak:
        rows.append({"case": "FMA ceiling", "kind": "fma_peak", "mode": "forward",
                     "contender": "rnnfast", "status": OK, "runs": len(report.peak),
                     "gflops": f"{report.peak_gflops:.4g}",
                     "sgemm_pct": f"{100 * report.peak_gflops / report.sgemm_gflops:.3g}",
                     "threads": report.settings.threads,
                     "note": "multiply-adds in registers (csrc/peak.h)"})
    for r in report.results:
        c, timed = r.case, r.timed
        speedup = 1.0 if r.contender == "rnnfast" and timed else report.speedup(c, r.mode, r.contender)
        rows.append({
            "case": c.label, "kind": c.kind, "cell": c.cell, "layers": c.layers,
            "directions": c.directions, "B": c.B, "T": c.T, "I": c.I, "H": c.H, "mode": r.mode,
            "contender": r.contender, "status": r.status, "runs": len(r.times),
            "calls_per_run": r.calls if timed else "",
            "median_ms": f"{r.median_ms:.6g}" if timed else "",
            "min_ms": f"{r.min_ms:.6g}" if timed else "",
            "speedup": "" if math.isnan(speedup) else f"{speedup:.4g}",
            "gflops": f"{r.gflops:.4g}" if timed else "",
            "sgemm_pct": f"{100 * report.sgemm_fraction(c, r.mode, r.contender):.3g}" if timed else "",
            "max_rel_error": "" if math.isnan(r.error) else f"{r.error:.3g}",
            "threads": report.settings.threads, "note": r.note})
    return rows


def write_csv(report: Report, out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_rows(report))


def read_csv(path: str) -> list[dict[str, str]]:
    """The rows of a file written by ``--csv``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and set(CSV_FIELDS) - set(rows[0]):
        raise ValueError(f"{path}: expected the columns of rnnfast bench --csv "
                         f"({', '.join(CSV_FIELDS)}), got {', '.join(rows[0])}")
    return rows


def machine_info() -> dict[str, str]:
    """CPU model, cores and SIMD flags (from /proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not flags:
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    simd = ", ".join(f for f in ("avx2", "fma", "avx512f") if f in flags) or "unknown"
    return {"cpu": model, "cores": f"{os.cpu_count()} logical, {available_cores()} available to "
                                   f"this process", "simd": simd}


def versions() -> dict[str, str]:
    import rnnfast

    info = rnnfast.build_info()
    out = {"rnnfast": f"{rnnfast.__version__} ({info['compiler']}, {info['simd']}, "
                      f"Eigen {info['eigen']})",
           "python": platform.python_version(), "numpy": np.__version__}
    for dist in ("torch", "onnxruntime", "onnx"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def write_markdown(report: Report, out: TextIO) -> None:
    """The RESULTS.md page: machine, versions, command, the table, notes and summary."""
    header, rows = table_rows(report)
    machine, v = machine_info(), versions()
    lines = ["# rnnfast benchmark results", "",
             f"Produced by `{report.command}` on {time.strftime('%Y-%m-%d')}.", "",
             f"- Machine: {machine['cpu']}; {machine['cores']}; {machine['simd']}",
             "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
             f"- {preamble(report)}", "",
             "| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if k < 2 else "---:" for k in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", *notes(report), "", *(f"- {s}" for s in summary_lines(report)), ""]
    out.write("\n".join(lines))


def write_plot(report: Report, path: str) -> None:
    """A bar chart of rnnfast's speed-up over each competitor, forward and training (log scale)."""
    from matplotlib.figure import Figure

    against = list(report.settings.against)
    modes = [m for m in ("forward", "train") if any(m in c.modes for c in report.cases)]
    fig = Figure(figsize=(max(8.0, 0.8 * len(report.cases) + 3), 4.0 * len(modes)),
                 layout="constrained")
    axes = fig.subplots(len(modes), 1, squeeze=False)[:, 0]
    width = 0.8 / max(1, len(against))
    for ax, mode in zip(axes, modes):
        cases = [c for c in report.cases if mode in c.modes]
        for k, name in enumerate(against):
            points = [(i, report.speedup(c, mode, name)) for i, c in enumerate(cases)]
            points = [(i, s) for i, s in points if not math.isnan(s)]
            if points:
                xs, ys = zip(*points)
                ax.bar([x + (k - (len(against) - 1) / 2) * width for x in xs], ys, width,
                       label=f"vs {DISPLAY[name]}", color=f"C{COMPETITORS.index(name)}")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(cases)), [c.label for c in cases], rotation=25, ha="right",
                      fontsize=8)
        ax.set_ylabel("rnnfast speed-up (x)")
        ax.set_title(f"{mode}: competitor time / rnnfast time (above 1: rnnfast is faster)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"rnnfast bench, {report.settings.threads} thread(s)")
    fig.savefig(path, dpi=120)


# ----------------------------------------------------------------------------------------------
# Command line.

def _names(choices: Sequence[str], what: str) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in text.split(",") if n.strip())
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"{what}: expected a comma-separated subset of "
                                             f"{','.join(choices)}, got {text!r}")
        return names
    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``rnnfast bench`` (also used by bench/run_bench.py)."""
    p.add_argument("--cells", type=_names(CELLS, "--cells"), default=CELLS,
                   help="cells to run (default: lstm,gru)")
    p.add_argument("--kinds", type=_names(KINDS, "--kinds"), default=KINDS,
                   help="sequence (one kernel call), layer (2-layer bidirectional LSTM through the "
                        "layer API), cell (one step); default: all")
    p.add_argument("--shapes", nargs="+", type=parse_shape, metavar="B,T,H",
                   help="sequence shapes B,T,H (I = H) or B,T,I,H instead of the grid's")
    p.add_argument("--cell-shapes", nargs="+", type=parse_cell_shape, metavar="B,H",
                   help="cell steps of B rows, hidden size H (I = H), instead of the grid's 1,256")
    p.add_argument("--against", type=_names(COMPETITORS, "--against"), default=COMPETITORS,
                   help="competitors (default: torch,onnxruntime,reference; absent ones are reported)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="threads for every library (default: all available cores)")
    p.add_argument("--repeats", type=_positive, default=None,
                   help="timed runs per contender, median reported (default 7; --quick 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds before timing (default 1)")
    p.add_argument("--ref-repeats", type=int, default=3,
                   help="at most this many timed runs for the slow NumPy reference (0: verify only)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds per timed run: short calls are repeated (default 0.02; --quick 0.002)")
    p.add_argument("--sgemm-size", type=_positive, default=None,
                   help="n of the n x n x n sgemm yardstick (default 2048; --quick 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test, not a measurement")
    p.add_argument("--csv", metavar="FILE", help="write one CSV row per case, mode and contender "
                                                 "('-': to stdout, the table then goes to stderr)")
    p.add_argument("--markdown", metavar="FILE",
                   help="write the RESULTS.md page (machine, versions, command, table)")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the speed-ups (matplotlib)")


def settings_from(args: argparse.Namespace) -> Settings:
    quick = args.quick

    def pick(value, default, quick_default):
        return value if value is not None else (quick_default if quick else default)

    return Settings(threads=args.threads or available_cores(), repeats=pick(args.repeats, 7, 3),
                    warmup=max(0, args.warmup), ref_repeats=max(0, args.ref_repeats),
                    min_time=pick(args.min_time, 0.02, 0.002), against=tuple(args.against),
                    seed=args.seed, sgemm_size=pick(args.sgemm_size, 2048, 512),
                    sgemm_runs=2 if quick else 6)


def command_line() -> str:
    """How this process was started, for the record."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "rnnfast"
    if prog == "__main__.py":
        prog = "python -m rnnfast"
    elif prog.endswith(".py"):
        prog = f"python {sys.argv[0]}"
    return " ".join([prog, *map(shlex.quote, sys.argv[1:])])


def bench_command(args: argparse.Namespace) -> int:
    """Run ``rnnfast bench``; exit status 1 if any contender disagreed with the reference or failed."""
    settings = settings_from(args)
    cases = grid(args.cells, args.kinds, args.shapes, args.quick, args.cell_shapes)
    if not cases:
        print("rnnfast bench: no case selected (--cells / --kinds)", file=sys.stderr)
        return 2
    report = run(cases, settings, command_line(), log=sys.stderr)
    table_out = sys.stderr if args.csv == "-" else sys.stdout
    print(format_table(report), file=table_out)
    if args.csv == "-":
        write_csv(report, sys.stdout)
    elif args.csv:
        with open(args.csv, "w", newline="") as f:
            write_csv(report, f)
    if args.markdown:
        with open(args.markdown, "w") as f:
            write_markdown(report, f)
    if args.plot:
        write_plot(report, args.plot)
    for r in report.refused:
        print(f"rnnfast bench: {r.case.label} {r.mode}: {r.contender} {r.status}: {r.note}",
              file=sys.stderr)
    return 1 if report.refused else 0


DESCRIPTION = ("Time rnnfast against the NumPy reference, PyTorch and ONNX Runtime: every contender "
               "is checked against the reference first, runs are interleaved, every library gets "
               "the same threads. See bench/README.md.")


def add_bench_parser(sub: Any) -> None:
    """Register ``bench`` on the ``rnnfast`` command's subparsers."""
    p = sub.add_parser("bench", help="time rnnfast against the NumPy reference, PyTorch and "
                                     "ONNX Runtime (verified first, interleaved, same threads)",
                       description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=bench_command)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (bench/run_bench.py)."""
    p = argparse.ArgumentParser(prog="run_bench.py", description=DESCRIPTION)
    add_arguments(p)
    return bench_command(p.parse_args(argv))
