"""The drop-in cells: against the reference (one step = a T=1 sequence), against torch's cells,
unbatched inputs, dtype handling and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import rnnfast
from rnnfast import reference as ref

B, I, H = 3, 5, 7
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def _weights(cell, rng, dtype, bias=True):
    G, bound = GATES[cell], 1 / np.sqrt(H)
    w = {"w_ih": rng.uniform(-bound, bound, (G * H, I)), "w_hh": rng.uniform(-bound, bound, (G * H, H))}
    if bias:
        w["b_ih"] = rng.uniform(-bound, bound, G * H)
        w["b_hh"] = rng.uniform(-bound, bound, G * H)
    return {k: v.astype(dtype) for k, v in w.items()}


def _reference_step(cell, x, h, c, w, **options):
    """One step through the reference's sequence functions, batched (B, ...) inputs."""
    b_ih, b_hh = w.get("b_ih"), w.get("b_hh")
    if cell == "lstm":
        _, h_n, c_n, _ = ref.lstm_forward(x[None], h, c, w["w_ih"], w["w_hh"], b_ih, b_hh)
        return h_n, c_n
    fwd = ref.gru_forward if cell == "gru" else ref.rnn_forward
    return fwd(x[None], h, w["w_ih"], w["w_hh"], b_ih, b_hh, **options)[1]


CASES = [("lstm", {}), ("gru", {"linear_before_reset": True}), ("gru", {"linear_before_reset": False}),
         ("rnn", {"nonlinearity": "tanh"}), ("rnn", {"nonlinearity": "relu"})]


def _call(cell, x, h, c, w, **options):
    if cell == "lstm":
        return rnnfast.lstm_cell(x, h, c, **w)
    return getattr(rnnfast, f"{cell}_cell")(x, h, **w, **options)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell,options", CASES, ids=[f"{c}-{o}" for c, o in CASES])
def test_cell_matches_reference(cell, options, dtype, bias, assert_close):
    rng = np.random.default_rng(1)
    w = _weights(cell, rng, dtype, bias)
    x = rng.standard_normal((B, I)).astype(dtype)
    h = rng.standard_normal((B, H)).astype(dtype)
    c = rng.standard_normal((B, H)).astype(dtype)
    w64 = {k: v.astype(np.float64) for k, v in w.items()}
    expected = _reference_step(cell, x.astype(np.float64), h.astype(np.float64),
                               c.astype(np.float64), w64, **options)
    got = _call(cell, x, h, c, w, **options)
    if cell == "lstm":
        for name, a, e in zip(("h", "c"), got, expected):
            assert a.dtype == dtype
            assert_close(a, e, dtype, "forward", f"{cell} cell {name}")
    else:
        assert got.dtype == dtype
        assert_close(got, expected, dtype, "forward", f"{cell} cell h")
    # Unbatched: (I,), (H,) in, (H,) out, row by row equal to the batched call.
    for b in range(B):
        one = _call(cell, x[b], h[b], c[b], w, **options)
        if cell == "lstm":
            assert one[0].shape == (H,) and one[1].shape == (H,)
            assert_close(one[0], got[0][b], dtype, "forward", f"{cell} unbatched h row {b}")
            assert_close(one[1], got[1][b], dtype, "forward", f"{cell} unbatched c row {b}")
        else:
            assert one.shape == (H,)
            assert_close(one, got[b], dtype, "forward", f"{cell} unbatched row {b}")


@pytest.mark.parametrize("cell,options", [c for c in CASES if c[1].get("linear_before_reset", True)],
                         ids=lambda v: str(v))
def test_cell_matches_torch(cell, options, assert_close):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    w = _weights(cell, rng, np.float64)
    x, h, c = (rng.standard_normal(s) for s in ((B, I), (B, H), (B, H)))
    if cell == "lstm":
        mod = torch.nn.LSTMCell(I, H).double()
    elif cell == "gru":
        mod = torch.nn.GRUCell(I, H).double()
    else:
        mod = torch.nn.RNNCell(I, H, nonlinearity=options["nonlinearity"]).double()
    mod.load_state_dict({"weight_ih": torch.tensor(w["w_ih"]), "weight_hh": torch.tensor(w["w_hh"]),
                         "bias_ih": torch.tensor(w["b_ih"]), "bias_hh": torch.tensor(w["b_hh"])})
    with torch.no_grad():
        if cell == "lstm":
            th, tc = mod(torch.tensor(x), (torch.tensor(h), torch.tensor(c)))
            gh, gc = rnnfast.lstm_cell(x, h, c, **w)
            assert_close(gh, th.numpy(), np.float64, "forward", "lstm cell h vs torch")
            assert_close(gc, tc.numpy(), np.float64, "forward", "lstm cell c vs torch")
        else:
            th = mod(torch.tensor(x), torch.tensor(h))
            assert_close(_call(cell, x, h, c, w, **options), th.numpy(), np.float64, "forward",
                         f"{cell} cell vs torch")


@pytest.mark.parametrize("cell,options", CASES, ids=[f"{c}-{o}" for c, o in CASES])
def test_friendly_inputs_are_converted(cell, options):
    """Arrays the kernel takes as they are (passed straight to it) and inputs that are converted
    first give bitwise the same step, batched and unbatched."""
    rng = np.random.default_rng(3)
    w = _weights(cell, rng, np.float32)
    x = rng.standard_normal((B, 2 * I)).astype(np.float32)[:, ::2]  # non-contiguous view
    h = rng.standard_normal((B, H)).astype(np.float16)  # another float dtype
    c = rng.standard_normal((B, H)).astype(np.float32)
    friendly = dict(w, w_ih=w["w_ih"].tolist(), w_hh=np.asfortranarray(w["w_hh"]))
    x32, h32 = np.ascontiguousarray(x), h.astype(np.float32)
    for rows in (slice(None), 1):  # batched, then unbatched (row 1)
        got = _call(cell, x[rows], h[rows], c[rows].tolist(), friendly, **options)
        expected = _call(cell, x32[rows], h32[rows], c[rows], w, **options)
        for a, e in zip(*((got, expected) if cell == "lstm" else ((got,), (expected,)))):
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, e)
    # float16 x computes in float32
    assert rnnfast.gru_cell(x.astype(np.float16), h, **_weights("gru", rng, np.float32)).dtype \
        == np.float32


def test_bad_inputs():
    rng = np.random.default_rng(4)
    w = _weights("lstm", rng, np.float32)
    x, h = np.zeros((B, I), np.float32), np.zeros((B, H), np.float32)
    with pytest.raises(TypeError, match="x"):
        rnnfast.lstm_cell(np.zeros((B, I), np.int64), h, h, **w)
    with pytest.raises(TypeError, match="x"):
        rnnfast.lstm_cell(np.array([object()] * I), h[0], h[0], **w)
    with pytest.raises(ValueError, match="h"):
        rnnfast.lstm_cell(x, h[0], h, **w)  # unbatched h with batched x
    with pytest.raises(ValueError, match="x"):
        rnnfast.lstm_cell(np.zeros((1, B, I), np.float32), h, h, **w)
    with pytest.raises(ValueError, match="w_hh"):
        rnnfast.lstm_cell(x, h, h, w["w_ih"], w["w_hh"][:, :-1])
    with pytest.raises(ValueError, match="c0"):
        rnnfast.lstm_cell(x, h, np.zeros((B, H + 1), np.float32), **w)
    with pytest.raises(ValueError, match="nonlinearity"):
        rnnfast.rnn_cell(x, h, w["w_ih"][:H], w["w_hh"][:H], nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="x"):
        rnnfast.lstm_cell(np.zeros((0, I), np.float32), np.zeros((0, H), np.float32),
                          np.zeros((0, H), np.float32), **w)
