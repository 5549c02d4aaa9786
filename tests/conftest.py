"""Shared test machinery: the one tolerance table, tensor comparison, and random test cases.

Tests get these through fixtures (``assert_close``, ``make_case``, ``variant``), never by
importing this file.
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest

# The one tolerance table lives in the package (``rnnfast check`` uses it too): the largest error
# allowed, relative to the largest magnitude of the expected tensor, by dtype and by kind
# ("forward": outputs and cache; "backward": gradients).
from rnnfast.check import TOLERANCES  # noqa: E402

# Property tests draw the same examples on every run (no example database, no random seed), so a
# result is reproducible and CI cannot pass or fail by luck. HYPOTHESIS_PROFILE=explore draws new
# examples, for hunting bugs by hand.
import os  # noqa: E402

from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("repeatable", derandomize=True, database=None)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


def _assert_close(actual, expected, dtype, kind, name):
    """Fail, naming the tensor, unless max|actual - expected| <= rtol * max|expected|.

    Parameters
    ----------
    actual, expected : array_like
        Same shape; compared in float64. An all-zero ``expected`` is compared with scale 1.
    dtype : str or numpy.dtype
        The dtype the computation under test ran in (selects the row of ``TOLERANCES``).
    kind : {"forward", "backward"}
    name : str
        Shown in the failure message, e.g. "lstm dw_hh".
    """
    rtol = TOLERANCES[(np.dtype(dtype).name, kind)]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (
        f"{name}: shape {actual.shape}, expected {expected.shape}")
    assert np.all(np.isfinite(actual)), f"{name}: not finite"
    if actual.size == 0:
        return
    scale = np.max(np.abs(expected)) or 1.0
    error = np.max(np.abs(actual - expected))
    assert error <= rtol * scale, (
        f"{name}: max abs error {error:.3e} > {rtol:g} * max|expected| {scale:.3e} "
        f"(relative {error / scale:.3e}, {dtype} {kind})")


@dataclasses.dataclass(frozen=True)
class Variant:
    """A cell and its options, e.g. an LSTM with peepholes."""

    id: str
    cell: str  # "lstm" | "gru" | "rnn"
    options: dict  # keyword options of the kernels: coupled, linear_before_reset, nonlinearity
    peephole: bool = False
    projection: bool = False


VARIANTS = {v.id: v for v in [
    Variant("lstm", "lstm", {}),
    Variant("lstm-peephole", "lstm", {}, peephole=True),
    Variant("lstm-coupled", "lstm", {"coupled": True}),
    Variant("lstm-projection", "lstm", {}, projection=True),
    Variant("lstm-all", "lstm", {"coupled": True}, peephole=True, projection=True),
    Variant("gru", "gru", {"linear_before_reset": True}),
    Variant("gru-lbr0", "gru", {"linear_before_reset": False}),
    Variant("rnn-tanh", "rnn", {"nonlinearity": "tanh"}),
    Variant("rnn-relu", "rnn", {"nonlinearity": "relu"}),
]}

GATES = {"lstm": 4, "gru": 3, "rnn": 1}

# Positional arguments of each kernel, in order (the SPEC signatures).
FORWARD_ARGS = {
    "lstm": ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"),
    "gru": ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"),
    "rnn": ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"),
}
BACKWARD_ARGS = {
    "lstm": ("dy", "dh_n", "dc_n", "x", "h0", "c0", "w_ih", "w_hh", "cache"),
    "gru": ("dy", "dh_n", "x", "h0", "w_ih", "w_hh", "cache"),
    "rnn": ("dy", "dh_n", "x", "h0", "w_ih", "w_hh", "cache"),
}
# Output names of the forward kernels, in order (the cache comes last).
FORWARD_OUTPUTS = {"lstm": ("y", "h_n", "c_n"), "gru": ("y", "h_n"), "rnn": ("y", "h_n")}


@dataclasses.dataclass
class Case:
    """One call of a cell's kernels: inputs, output gradients and time options.

    ``forward(module)`` and ``backward(module, cache)`` call ``module.<cell>_forward`` /
    ``module.<cell>_backward`` (module: ``rnnfast.reference`` or ``rnnfast._core``); keyword
    overrides replace any argument, e.g. ``forward(ref, w_hh=bad)``.
    """

    variant: Variant
    inputs: dict  # x, h0, [c0], w_ih, w_hh, b_ih, b_hh, [w_hr], [w_peep]
    output_grads: dict  # dy, dh_n, [dc_n]
    reverse: bool = False
    lengths: np.ndarray | None = None

    @property
    def cell(self):
        return self.variant.cell

    @property
    def dtype(self):
        return self.inputs["x"].dtype

    def _call(self, fn, positional, values):
        # w_hr and w_peep are passed only when the variant has them (or a test overrides them).
        keywords = {k: v for k, v in values.items()
                    if k not in positional and not (k in ("w_hr", "w_peep") and v is None)}
        return fn(*(values[name] for name in positional), **keywords)

    def forward(self, module, training=True, **overrides):
        """Return (outputs dict: y, h_n[, c_n]; cache)."""
        values = {**self.inputs, **self.variant.options, "reverse": self.reverse,
                  "lengths": self.lengths, "training": training, **overrides}
        *outputs, cache = self._call(getattr(module, f"{self.cell}_forward"),
                                     FORWARD_ARGS[self.cell], values)
        return dict(zip(FORWARD_OUTPUTS[self.cell], outputs)), cache

    def backward(self, module, cache, **overrides):
        """Return the gradient dict of ``module.<cell>_backward``."""
        values = {**self.inputs, **self.output_grads, **self.variant.options, "cache": cache,
                  "reverse": self.reverse, "lengths": self.lengths, **overrides}
        for bias in ("b_ih", "b_hh"):
            values.pop(bias)
        return self._call(getattr(module, f"{self.cell}_backward"), BACKWARD_ARGS[self.cell],
                          values)

    def astype(self, dtype):
        """The same case with every float array converted to ``dtype``."""
        def convert(arrays):
            return {k: None if v is None else v.astype(dtype) for k, v in arrays.items()}
        return dataclasses.replace(self, inputs=convert(self.inputs),
                                   output_grads=convert(self.output_grads))

    def loss(self, outputs):
        """sum(y dy) + sum(h_n dh_n) [+ sum(c_n dc_n)]: the loss whose gradients backward gives."""
        return sum(float(np.sum(outputs[name] * self.output_grads[f"d{name}"]))
                   for name in ("y", "h_n", "c_n") if name in outputs)


def _make_case(variant, T, B, I, H, *, P=None, dtype=np.float64, reverse=False, ragged=False,
               x_scale=1.0, seed=None):
    """A random case for ``variant`` (a Variant or its id) with a seeded generator.

    Weights ~ U(-1/sqrt(H), 1/sqrt(H)) like PyTorch's initialisation; x ~ U(-x_scale, x_scale)
    (x_scale of 3 or more saturates many gates); h0, c0 ~ U(-1, 1); output gradients ~ N(0, 1).
    With a projection P defaults to max(1, H // 2) (PyTorch needs P < H). With ``ragged`` the
    lengths are random, row 0 having length T and the last row length 1 (a single row: T - 1).
    The seed defaults to a hash of all the arguments.
    """
    variant = VARIANTS[variant] if isinstance(variant, str) else variant
    if seed is None:
        seed = zlib.crc32(repr((variant.id, T, B, I, H, P, reverse, ragged, x_scale)).encode())
    rng = np.random.default_rng(seed)
    P = (P or max(1, H // 2)) if variant.projection else H
    G, k = GATES[variant.cell], 1 / np.sqrt(H)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, shape)

    inputs = {"x": uniform((T, B, I), x_scale), "h0": uniform((B, P), 1.0)}
    grads = {"dy": rng.standard_normal((T, B, P)), "dh_n": rng.standard_normal((B, P))}
    if variant.cell == "lstm":
        inputs["c0"] = uniform((B, H), 1.0)
        grads["dc_n"] = rng.standard_normal((B, H))
    inputs |= {"w_ih": uniform((G * H, I), k), "w_hh": uniform((G * H, P), k),
               "b_ih": uniform((G * H,), k), "b_hh": uniform((G * H,), k)}
    if variant.projection:
        inputs["w_hr"] = uniform((P, H), k)
    if variant.peephole:
        inputs["w_peep"] = uniform((3, H), k)
    lengths = None
    if ragged:
        lengths = rng.integers(1, T + 1, size=B, dtype=np.int64)
        if B == 1:
            lengths[0] = max(1, T - 1)
        else:
            lengths[0], lengths[-1] = T, 1
    return Case(variant, inputs, grads, reverse, lengths).astype(dtype)


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected, dtype, kind, name)``: see ``_assert_close``."""
    return _assert_close


@pytest.fixture
def make_case():
    """``make_case(variant, T, B, I, H, **options) -> Case``: see ``_make_case``."""
    return _make_case


@pytest.fixture(params=list(VARIANTS.values()), ids=list(VARIANTS))
def variant(request):
    """Every cell variant in turn."""
    return request.param
