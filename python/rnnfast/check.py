"""Every compiled kernel against the NumPy reference: the tolerance table and the check behind
``rnnfast check`` (the test suite uses the same table, see tests/conftest.py).

Errors are relative to the largest magnitude of the expected tensor: max|a - e| / max(max|e|, tiny).
A float32 kernel is compared with the float64 reference run on the same (float32-representable)
inputs, so the figure is the kernel's own error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core, reference

# The one tolerance table: (dtype, "forward" | "backward") -> max relative error.
TOLERANCES: dict[tuple[str, str], float] = {
    ("float64", "forward"): 1e-10,
    ("float64", "backward"): 1e-8,
    ("float32", "forward"): 1e-5,
    ("float32", "backward"): 1e-4,
}


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (0/0 counts as 0)."""
    expected = np.asarray(expected, dtype=np.float64)
    diff = np.max(np.abs(np.asarray(actual, dtype=np.float64) - expected), initial=0.0)
    scale = np.max(np.abs(expected), initial=0.0)
    return float(diff / scale) if scale > 0 else float(diff)


@dataclass(frozen=True)
class Variant:
    """One kernel configuration: the cell kind and its options."""

    cell: str  # "lstm", "gru", "rnn"
    options: dict[str, Any] = field(default_factory=dict)
    proj: int = 0  # LSTM projection size (0 = none)

    @property
    def name(self) -> str:
        parts = [self.cell] + [f"{k}={v}" for k, v in self.options.items() if k != "w_peep"]
        if self.options.get("w_peep"):
            parts.append("peephole")
        if self.proj:
            parts.append(f"proj={self.proj}")
        return " ".join(parts)


VARIANTS = (
    Variant("lstm"),
    Variant("lstm", {"w_peep": True}),
    Variant("lstm", {"coupled": True}),
    Variant("lstm", proj=5),
    Variant("lstm", {"w_peep": True, "coupled": True}, proj=5),
    Variant("gru", {"linear_before_reset": True}),
    Variant("gru", {"linear_before_reset": False}),
    Variant("rnn", {"nonlinearity": "tanh"}),
    Variant("rnn", {"nonlinearity": "relu"}),
)

_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def make_case(v: Variant, T: int, B: int, I: int, H: int, rng: np.random.Generator,
              ragged: bool) -> dict[str, Any]:
    """Random float64 inputs for one call (values exactly representable in float32)."""
    G, P = _GATES[v.cell], v.proj or H
    bound = 1.0 / np.sqrt(H)

    def rand(*shape, scale=1.0):
        return (rng.uniform(-scale, scale, shape)).astype(np.float32).astype(np.float64)

    case = {
        "x": rand(T, B, I, scale=2.0),
        "h0": rand(B, P),
        "w_ih": rand(G * H, I, scale=bound),
        "w_hh": rand(G * H, P, scale=bound),
        "b_ih": rand(G * H, scale=bound),
        "b_hh": rand(G * H, scale=bound),
        "dy": rand(T, B, P),
        "dh_n": rand(B, P),
        "lengths": rng.integers(1, T + 1, B).astype(np.int64) if ragged else None,
    }
    if ragged:
        case["lengths"][0] = T
    if v.cell == "lstm":
        case["c0"] = rand(B, H)
        case["dc_n"] = rand(B, H)
        if v.proj:
            case["w_hr"] = rand(P, H, scale=bound)
        if v.options.get("w_peep"):
            case["w_peep"] = rand(3, H, scale=bound)
    return case


def run(module, v: Variant, case: dict[str, Any], dtype, reverse: bool):
    """Forward (training) and backward through ``module``; returns (outputs, gradients) dicts."""
    c = {k: (a.astype(dtype) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a)
         for k, a in case.items()}
    common = {"reverse": reverse, "lengths": c["lengths"]}
    if v.cell == "lstm":
        extra = {"w_hr": c.get("w_hr"), "w_peep": c.get("w_peep"),
                 "coupled": bool(v.options.get("coupled", False))}
        y, h_n, c_n, cache = module.lstm_forward(c["x"], c["h0"], c["c0"], c["w_ih"], c["w_hh"],
                                                 c["b_ih"], c["b_hh"], training=True, **extra, **common)
        g = module.lstm_backward(c["dy"], c["dh_n"], c["dc_n"], c["x"], c["h0"], c["c0"],
                                 c["w_ih"], c["w_hh"], cache, **extra, **common)
        return {"y": y, "h_n": h_n, "c_n": c_n}, g
    fwd, bwd = getattr(module, f"{v.cell}_forward"), getattr(module, f"{v.cell}_backward")
    y, h_n, cache = fwd(c["x"], c["h0"], c["w_ih"], c["w_hh"], c["b_ih"], c["b_hh"],
                        training=True, **v.options, **common)
    g = bwd(c["dy"], c["dh_n"], c["x"], c["h0"], c["w_ih"], c["w_hh"], cache, **v.options, **common)
    return {"y": y, "h_n": h_n}, g


@dataclass
class CheckRow:
    variant: str
    dtype: str
    shape: str
    forward: float
    backward: float
    ok: bool


SHAPES = ((9, 5, 7, 13), (6, 16, 40, 70))  # (T, B, I, H): odd sizes, and one that runs threaded


def run_checks(seed: int = 0, module=None) -> list[CheckRow]:
    """Every variant x dtype x shape x direction x (full, ragged) of ``module`` (default: the
    kernels rnnfast runs, ``rnnfast._core``) against the reference."""
    module = _core if module is None else module
    rng = np.random.default_rng(seed)
    rows = []
    for v in VARIANTS:
        for T, B, I, H in SHAPES:
            for dtype in (np.float64, np.float32):
                worst = {"forward": 0.0, "backward": 0.0}
                for reverse in (False, True):
                    for ragged in (False, True):
                        case = make_case(v, T, B, I, H, rng, ragged)
                        ref_out, ref_g = run(reference, v, case, np.float64, reverse)
                        out, g = run(module, v, case, dtype, reverse)
                        for k in ref_out:
                            worst["forward"] = max(worst["forward"], relative_error(out[k], ref_out[k]))
                        for k in ref_g:
                            worst["backward"] = max(worst["backward"], relative_error(g[k], ref_g[k]))
                name = np.dtype(dtype).name
                ok = all(worst[kind] <= TOLERANCES[(name, kind)] for kind in worst)
                rows.append(CheckRow(v.name, name, f"T={T} B={B} I={I} H={H}",
                                     worst["forward"], worst["backward"], ok))
    return rows
