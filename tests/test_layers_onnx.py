"""rnnfast's one-layer LSTM / GRU / RNN against ONNX Runtime's LSTM / GRU / RNN operators
(opset 14): the LSTM variants no other framework has on CPU (peephole; coupled input and forget
gates, ONNX ``input_forget=1``), GRU ``linear_before_reset`` 0 and 1, RNN tanh and relu; direction
forward, reverse and bidirectional; full batches and ``sequence_lens`` in any order.

Weights go from the rnnfast layer to ONNX: gate blocks reordered (LSTM W/R/B i,o,f,c from our
i,f,g,o; GRU z,r,h from our r,z,n), ``B = concat[Wb, Rb]``, peephole ``P = [p_i, p_o, p_f]`` from
our rows p_i, p_f, p_o; ONNX stacks the directions on a leading axis.

What ONNX Runtime does (onnxruntime 1.31 CPU, checked by hand before these tests were written):
- LSTM, GRU and RNN run in float32 only ("LSTM operator does not support double yet"), so ONNX
  Runtime runs in float32 on float32 weights and inputs, and rnnfast (float32, or float64 on the
  same float32 values) is compared at the float32 tolerance.
- Y [T, D, B, H]. Past a sequence's end ONNX Runtime writes zeros, in both directions, as rnnfast
  does; but the ONNX specification does not define Y there, so only valid steps are compared.
  (That rnnfast writes exact zeros there is checked here too: that is rnnfast's own promise.)
- Y_h / Y_c hold each sequence's state after its last processed step: t = len-1 for the forward
  direction; the reverse direction starts at t = len-1 and ends at t = 0.
- ONNX's reverse direction is the backward half of a bidirectional rnnfast layer (the ``_reverse``
  weights), with initial_h[0] its part of the initial state.
"""

import numpy as np
import pytest

import rnnfast

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

T, B, I, H = 5, 4, 3, 6
LENGTHS = [2, 5, 1, 4]
OPSET = 14

# ONNX gate block k is our gate block ONNX_GATES[cell][k].
from rnnfast.benchmark import ONNX_GATE_ORDER as ONNX_GATES  # the one table of ONNX gate orders
ONNX_PEEPHOLE_ROWS = [0, 2, 1]  # ONNX P = p_i, p_o, p_f
OPS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
CLASSES = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU, "rnn": rnnfast.RNN}
SUFFIXES = {"forward": [""], "reverse": ["_reverse"], "bidirectional": ["", "_reverse"]}

# id -> (cell, rnnfast options, ONNX attributes)
VARIANTS = {
    "lstm": ("lstm", {}, {}),
    "lstm-peephole": ("lstm", {"peephole": True}, {}),
    "lstm-coupled": ("lstm", {"coupled": True}, {"input_forget": 1}),
    "lstm-peephole-coupled": ("lstm", {"peephole": True, "coupled": True}, {"input_forget": 1}),
    "gru-lbr0": ("gru", {"linear_before_reset": False}, {"linear_before_reset": 0}),
    "gru-lbr1": ("gru", {"linear_before_reset": True}, {"linear_before_reset": 1}),
    "rnn-tanh": ("rnn", {"nonlinearity": "tanh"}, {"activations": ["Tanh"]}),
    "rnn-relu": ("rnn", {"nonlinearity": "relu"}, {"activations": ["Relu"]}),
}


def _gate_blocks(a, cell):
    """``a`` (gate blocks of H rows stacked on axis 0) with its blocks in ONNX's order."""
    blocks = np.split(a, len(ONNX_GATES[cell]))
    return np.concatenate([blocks[k] for k in ONNX_GATES[cell]])


def _onnx_weights(cell, state_dict, suffixes):
    """W, R, B [and P] for the directions named by ``suffixes``, stacked on a leading axis."""
    def stacked(make):
        return np.stack([make(s) for s in suffixes]).astype(np.float32)

    weights = {
        "W": stacked(lambda s: _gate_blocks(state_dict[f"weight_ih_l0{s}"], cell)),
        "R": stacked(lambda s: _gate_blocks(state_dict[f"weight_hh_l0{s}"], cell)),
        "B": stacked(lambda s: np.concatenate([_gate_blocks(state_dict[f"bias_ih_l0{s}"], cell),
                                               _gate_blocks(state_dict[f"bias_hh_l0{s}"], cell)])),
    }
    if "weight_peephole_l0" in state_dict:
        weights["P"] = stacked(
            lambda s: state_dict[f"weight_peephole_l0{s}"][ONNX_PEEPHOLE_ROWS].reshape(-1))
    return weights


def _run_onnx(cell, direction, attributes, feeds):
    """One ONNX node of ``cell`` run by ONNX Runtime on ``feeds`` (absent optional inputs are
    left out); returns its outputs by name: Y, Y_h [, Y_c]."""
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]
    inputs = [name if name in feeds else "" for name in order[:8 if cell == "lstm" else 6]]
    while inputs[-1] == "":
        inputs.pop()
    outputs = ["Y", "Y_h", "Y_c"] if cell == "lstm" else ["Y", "Y_h"]
    if "activations" in attributes:  # one activation per direction
        attributes = {**attributes,
                      "activations": attributes["activations"] * len(SUFFIXES[direction])}
    node = helper.make_node(OPS[cell], inputs, outputs, hidden_size=H, direction=direction,
                            **attributes)
    graph = helper.make_graph(
        [node], f"{cell}_{direction}",
        [helper.make_tensor_value_info(
            name, TensorProto.INT32 if name == "sequence_lens" else TensorProto.FLOAT,
            feeds[name].shape) for name in inputs if name],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None] * (4 if name == "Y" else 3))
         for name in outputs])
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return dict(zip(outputs, session.run(outputs, {n: feeds[n] for n in inputs if n})))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "sequence_lens"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("variant_id", list(VARIANTS))
def test_layer_matches_onnxruntime(variant_id, direction, lengths, dtype, assert_close):
    cell, options, attributes = VARIANTS[variant_id]
    bidirectional = direction != "forward"
    # float32 weights (ONNX Runtime's dtype), loaded into a layer of ``dtype``.
    source = CLASSES[cell](I, H, bidirectional=bidirectional, dtype=np.float32, seed=5, **options)
    layer = CLASSES[cell](I, H, bidirectional=bidirectional, dtype=dtype, **options)
    layer.load_state_dict(source.state_dict())
    D = 2 if bidirectional else 1
    halves = [0, 1] if direction == "bidirectional" else [D - 1]  # ours that ONNX computes

    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (T, B, I)).astype(np.float32)
    states = [rng.uniform(-1, 1, (D, B, H)).astype(np.float32)
              for _ in range(2 if cell == "lstm" else 1)]
    output, final = layer(x, tuple(states) if cell == "lstm" else states[0], lengths=lengths)
    finals = final if cell == "lstm" else (final,)

    feeds = {"X": x, **_onnx_weights(cell, source.state_dict(), SUFFIXES[direction]),
             "initial_h": states[0][halves]}
    if cell == "lstm":
        feeds["initial_c"] = states[1][halves]
    if lengths is not None:
        feeds["sequence_lens"] = np.asarray(lengths, dtype=np.int32)
    expected = _run_onnx(cell, direction, attributes, feeds)

    # Ours [T, B, D*H] -> [T, D, B, H] like Y, then only the steps ONNX defines.
    y = output.reshape(T, B, D, H).transpose(0, 2, 1, 3)[:, halves]
    valid = np.ones((T, B), bool) if lengths is None else np.arange(T)[:, None] < np.array(lengths)
    assert expected["Y"].shape == y.shape, "Y shape"
    label = f"{variant_id} {direction}"
    for k in range(len(halves)):
        assert_close(y[:, k][valid], expected["Y"][:, k][valid], np.float32, "forward",
                     f"{label} Y direction {k}")
    np.testing.assert_array_equal(y.transpose(0, 2, 1, 3)[~valid], 0,
                                  err_msg=f"{label}: rnnfast output past the ends")
    for name, ours in zip(["Y_h", "Y_c"], finals):
        assert_close(ours[halves], expected[name], np.float32, "forward", f"{label} {name}")


def test_coupled_lstm_is_not_the_plain_lstm():
    """The coupled comparison above could pass only if ``input_forget`` meant something: with
    the same weights, ONNX Runtime's coupled and plain LSTMs differ."""
    source = rnnfast.LSTM(I, H, dtype=np.float32, seed=7)
    rng = np.random.default_rng(8)
    feeds = {"X": rng.uniform(-1, 1, (T, B, I)).astype(np.float32),
             **_onnx_weights("lstm", source.state_dict(), [""])}
    plain = _run_onnx("lstm", "forward", {}, feeds)["Y"]
    coupled = _run_onnx("lstm", "forward", {"input_forget": 1}, feeds)["Y"]
    assert np.max(np.abs(plain - coupled)) > 1e-2
