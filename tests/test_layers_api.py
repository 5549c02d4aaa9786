"""The public API of rnnfast.LSTM / GRU / RNN, on both backends where it matters: shapes as
torch's, PyTorch's state_dict names, initialisation, ``grads`` and training mode, bidirectional
alignment and variable lengths, every bad input, and the friendly inputs that are converted."""

import re

import numpy as np
import pytest

import rnnfast

T, B, I, H = 5, 3, 4, 6
LENGTHS = [3, 5, 1]
CLASSES = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU, "rnn": rnnfast.RNN}
BACKEND = pytest.mark.parametrize("backend", ["core", "reference"])


def _layer(variant, dtype=np.float64, seed=0, **options):
    """A layer of ``variant`` (a conftest Variant) with sizes I, H; a projection has H // 2."""
    kwargs = dict(variant.options)  # coupled / linear_before_reset / nonlinearity
    if variant.peephole:
        kwargs["peephole"] = True
    if variant.projection:
        kwargs["proj_size"] = H // 2
    return CLASSES[variant.cell](I, H, dtype=dtype, seed=seed, **kwargs, **options)


def _parts(state):
    """A state as a tuple: (h,) or (h, c)."""
    return state if isinstance(state, tuple) else (state,)


def _flat(result):
    """(array, state) -> [array, h] or [array, h, c]."""
    return [result[0], *_parts(result[1])]


def _random_state(layer, rng, draw="uniform"):
    """A random state (or state gradient) for ``layer`` and batch B, structured as the layer's,
    from ``rng.<draw>``. Runs an eval-mode forward (which drops a saved training forward) and
    leaves the layer in training mode: call it before the forward under test."""
    _, state = layer.eval()(np.zeros((B, T, I) if layer.batch_first else (T, B, I)))
    layer.train()
    parts = tuple(getattr(rng, draw)(size=s.shape) for s in _parts(state))
    return parts if len(parts) == 2 else parts[0]


# ----------------------------------------------------------------------------------------------
# Shapes.

@pytest.mark.parametrize("batch_first", [False, True], ids=["TB", "BT"])
@pytest.mark.parametrize(("bidirectional", "merge_mode"),
                         [(False, "concat"), (True, "concat"), (True, "sum"), (True, "mul")],
                         ids=["uni", "bi-concat", "bi-sum", "bi-mul"])
@pytest.mark.parametrize("num_layers", [1, 3])
def test_shapes_are_torchs(variant, num_layers, bidirectional, merge_mode, batch_first):
    layer = _layer(variant, np.float32, num_layers=num_layers, bidirectional=bidirectional,
                   merge_mode=merge_mode, batch_first=batch_first)
    D = 2 if bidirectional else 1
    H_out = H // 2 if variant.projection else H
    x = np.random.default_rng(0).uniform(-1, 1, (B, T, I) if batch_first else (T, B, I))
    output, state = layer(x.astype(np.float32))
    width = D * H_out if merge_mode == "concat" else H_out
    assert output.shape == ((B, T, width) if batch_first else (T, B, width))
    expected = [(D * num_layers, B, H_out)] + ([(D * num_layers, B, H)]
                                               if variant.cell == "lstm" else [])
    assert isinstance(state, tuple) == (variant.cell == "lstm")
    assert [s.shape for s in _parts(state)] == expected
    assert all(a.dtype == np.float32 for a in (output, *_parts(state)))
    grad_x, grad_state0 = layer.backward(np.ones_like(output))
    assert grad_x.shape == x.shape and grad_x.dtype == np.float32
    assert isinstance(grad_state0, tuple) == (variant.cell == "lstm")
    assert [s.shape for s in _parts(grad_state0)] == expected


# ----------------------------------------------------------------------------------------------
# state_dict, initialisation, grads.

def _expected_keys(num_layers, bidirectional, names):
    """PyTorch's order: layer by layer, direction by direction, the names in the given order."""
    return [f"{name}_l{k}{suffix}" for k in range(num_layers)
            for suffix in (["", "_reverse"] if bidirectional else [""]) for name in names]


@pytest.mark.parametrize(("cls", "options", "names", "shapes"), [
    pytest.param(rnnfast.LSTM, {}, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"],
                 lambda i: [(24, i), (24, 6), (24,), (24,)], id="lstm"),
    pytest.param(rnnfast.LSTM, {"proj_size": 2},
                 ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"],
                 lambda i: [(24, i), (24, 2), (24,), (24,), (2, 6)], id="lstm-projection"),
    pytest.param(rnnfast.LSTM, {"bias": False}, ["weight_ih", "weight_hh"],
                 lambda i: [(24, i), (24, 6)], id="lstm-no-bias"),
    pytest.param(rnnfast.GRU, {}, ["weight_ih", "weight_hh", "bias_ih", "bias_hh"],
                 lambda i: [(18, i), (18, 6), (18,), (18,)], id="gru"),
    pytest.param(rnnfast.RNN, {"nonlinearity": "relu"},
                 ["weight_ih", "weight_hh", "bias_ih", "bias_hh"],
                 lambda i: [(6, i), (6, 6), (6,), (6,)], id="rnn"),
])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_state_dict_has_torchs_keys_and_shapes(cls, options, names, shapes, bidirectional):
    layer = cls(I, H, num_layers=3, bidirectional=bidirectional, **options)
    state = layer.state_dict()
    assert list(state) == _expected_keys(3, bidirectional, names)
    width = (2 if bidirectional else 1) * options.get("proj_size", H)
    for k in range(3):
        for suffix in ["", "_reverse"] if bidirectional else [""]:
            got = [state[f"{name}_l{k}{suffix}"].shape for name in names]
            assert got == shapes(I if k == 0 else width), f"layer {k}{suffix}"


def test_state_dict_equals_a_torch_modules_names_and_shapes():
    torch = pytest.importorskip("torch")
    for module, layer in [
            (torch.nn.LSTM(I, H, 2, bidirectional=True, proj_size=2),
             rnnfast.LSTM(I, H, 2, bidirectional=True, proj_size=2)),
            (torch.nn.GRU(I, H, 3, bias=False), rnnfast.GRU(I, H, 3, bias=False)),
            (torch.nn.RNN(I, H, 2, bidirectional=True), rnnfast.RNN(I, H, 2, bidirectional=True))]:
        expected = [(name, tuple(p.shape)) for name, p in module.state_dict().items()]
        assert [(name, p.shape) for name, p in layer.state_dict().items()] == expected


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_peephole_weights_are_named_and_shaped(bidirectional):
    layer = rnnfast.LSTM(I, H, num_layers=2, bidirectional=bidirectional, peephole=True,
                         proj_size=2)
    state = layer.state_dict()
    peepholes = _expected_keys(2, bidirectional, ["weight_peephole"])
    assert set(state) == set(_expected_keys(2, bidirectional, [
        "weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"])) | set(peepholes)
    for name in peepholes:
        assert state[name].shape == (3, H), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_initialisation_is_reproducible_and_within_torchs_bound(variant, dtype):
    options = {"num_layers": 2, "bidirectional": True}
    first = _layer(variant, dtype, seed=3, **options).state_dict()
    again = _layer(variant, dtype, seed=3, **options).state_dict()
    other = _layer(variant, dtype, seed=4, **options).state_dict()
    bound = 1 / np.sqrt(H)
    for name, p in first.items():
        assert p.dtype == dtype, name
        np.testing.assert_array_equal(again[name], p, err_msg=f"{name}: same seed")
        assert not np.array_equal(other[name], p), f"{name}: another seed, same weights"
        assert np.all(np.abs(p) <= bound), f"{name}: outside +-1/sqrt(H)"
    # Uniform over the whole interval, not a part of it.
    values = np.concatenate([p.ravel() for p in first.values()])
    assert values.min() < -0.9 * bound and values.max() > 0.9 * bound
    assert abs(values.mean()) < 0.1 * bound


@BACKEND
def test_grads_mirror_state_dict_accumulate_and_zero(variant, backend, assert_close):
    layer = _layer(variant, backend=backend, num_layers=2, bidirectional=True)
    assert layer.grads.keys() == layer.state_dict().keys()
    for name, p in layer.state_dict().items():
        assert layer.grads[name].shape == p.shape and layer.grads[name].dtype == p.dtype, name
        np.testing.assert_array_equal(layer.grads[name], 0, err_msg=f"{name}: before backward")
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (T, B, I))
    state = _random_state(layer, rng)
    grad_state = _random_state(layer, rng, "standard_normal")
    before = layer.state_dict()
    output, _ = layer(x, state, lengths=LENGTHS)
    grad_output = rng.standard_normal(output.shape)
    layer.backward(grad_output, grad_state)
    once = {name: g.copy() for name, g in layer.grads.items()}
    for name, g in once.items():
        assert np.any(g != 0), f"{name}: no gradient"
    layer.backward(grad_output, grad_state)  # the same forward again
    layer(x, state, lengths=LENGTHS)
    layer.backward(grad_output, grad_state)  # a new forward
    for name, g in once.items():
        assert_close(layer.grads[name], 3 * g, np.float64, "backward", f"{name} x3")
    layer.zero_grad()
    for name, g in layer.grads.items():
        np.testing.assert_array_equal(g, 0, err_msg=f"{name}: after zero_grad")
    layer(x, state, lengths=LENGTHS)
    layer.backward(grad_output, grad_state)
    for name, g in once.items():
        assert_close(layer.grads[name], g, np.float64, "backward", f"{name} after zero_grad")
    for name, p in layer.state_dict().items():  # backward computes, it does not update
        np.testing.assert_array_equal(p, before[name], err_msg=f"{name} changed")


@BACKEND
def test_backward_needs_a_training_forward(backend):
    layer = rnnfast.GRU(I, H, num_layers=2, dtype=np.float64, backend=backend)
    x = np.zeros((T, B, I))
    grad_output = np.ones((T, B, H))
    with pytest.raises(RuntimeError, match="backward"):
        layer.backward(grad_output)  # no forward yet
    assert layer.training
    layer(x)
    assert layer.eval() is layer and not layer.training
    with pytest.raises(RuntimeError, match="eval"):
        layer.backward(grad_output)  # the training forward is gone with eval()
    layer(x)
    assert layer.train() is layer and layer.training
    with pytest.raises(RuntimeError, match="backward"):
        layer.backward(grad_output)  # the last forward was in eval mode: nothing saved
    layer(x)
    layer.backward(grad_output)


@BACKEND
def test_none_means_zeros(variant, backend, assert_close):
    layer = _layer(variant, backend=backend, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (T, B, I))
    zeros = tuple(np.zeros_like(a) for a in _parts(_random_state(layer, rng)))
    zeros = zeros if len(zeros) == 2 else zeros[0]
    output, final = layer(x, None, lengths=LENGTHS)
    grad_output = rng.standard_normal(output.shape)
    grads_none = layer.backward(grad_output, None)
    for k, (got, expected) in enumerate(zip([output, *_parts(final)],
                                            _flat(layer(x, zeros, lengths=LENGTHS)))):
        assert_close(got, expected, np.float64, "forward", f"state None, tensor {k}")
    grads_zeros = layer.backward(grad_output, zeros)
    for k, (got, expected) in enumerate(zip(_flat(grads_none), _flat(grads_zeros))):
        assert_close(got, expected, np.float64, "backward", f"grad_state None, tensor {k}")


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "ragged"])
def test_returned_arrays_belong_to_the_caller(variant, lengths, assert_close):
    """Writing into the output and the final state does not change what backward computes (the
    output of a kernel may double as its cache)."""
    grads = []
    for scribble in (False, True):
        layer = _layer(variant, num_layers=2)  # one direction: the last output is a kernel's
        rng = np.random.default_rng(3)
        output, final = layer(rng.uniform(-1, 1, (T, B, I)), lengths=lengths)
        grad_output = rng.standard_normal(output.shape)
        if scribble:
            output[...] = 7.0
            for a in _parts(final):
                a[...] = 7.0
        grads.append([*_flat(layer.backward(grad_output)), *layer.grads.values()])
    for k, (got, expected) in enumerate(zip(*grads[::-1])):
        assert_close(got, expected, np.float64, "backward", f"tensor {k}")


@pytest.mark.parametrize("argument", ["x", "state"])
@BACKEND
def test_inputs_written_after_forward_do_not_change_backward(backend, argument, assert_close):
    """The forward's inputs stay the caller's: writing into x or into the initial state between
    forward and backward (a reused buffer; truncated BPTT carrying the state with
    ``h[...] = h_n``) must not change the gradients. (torch raises when a tensor autograd saved
    is modified in place; silently wrong gradients are the one outcome not allowed.)"""
    rng = np.random.default_rng(17)
    x = rng.uniform(-1, 1, (T, B, I))  # float64, C-contiguous: what the layer would keep as is
    state = (rng.uniform(-1, 1, (2, B, H)), rng.uniform(-1, 1, (2, B, H)))
    grad_output = rng.standard_normal((T, B, 2 * H))
    results = []
    for overwrite in (False, True):
        layer = rnnfast.LSTM(I, H, bidirectional=True, dtype=np.float64, seed=18,
                             backend=backend)
        arguments = {"x": x.copy(), "state": tuple(s.copy() for s in state)}
        _, final = layer(arguments["x"], arguments["state"], lengths=LENGTHS)
        if overwrite:
            for buffer, new in zip(_parts(arguments[argument]),
                                   _parts(final) if argument == "state" else (x[::-1],)):
                buffer[...] = new
        results.append([*_flat(layer.backward(grad_output)), *layer.grads.values()])
    names = ["grad_x", "grad_h0", "grad_c0", *layer.grads]
    for name, got, expected in zip(names, results[1], results[0]):
        assert_close(got, expected, np.float64, "backward", f"{argument} overwritten: {name}")


# ----------------------------------------------------------------------------------------------
# Bidirectional alignment and variable lengths.

def _reverse_rows(a, lengths):
    """a [T, B, ...] with each row's first lengths[b] steps reversed in time (the rest kept)."""
    out = a.copy()
    for b, n in enumerate(lengths):
        out[:n, b] = a[:n, b][::-1]
    return out


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "ragged"])
@BACKEND
def test_reverse_half_is_a_plain_run_on_the_reversed_sequence(variant, backend, lengths,
                                                              assert_close):
    """d2l-en#2306: the reverse direction's output at step t is a unidirectional run over the
    reversed sequence read at step T-1-t (len-1-t for a sequence of length len); its final
    state is that run's. The forward half is a plain run on the sequence itself."""
    bi = _layer(variant, backend=backend, bidirectional=True, seed=8)
    halves = {}
    for suffix in ("", "_reverse"):
        halves[suffix] = _layer(variant, backend=backend)
        halves[suffix].load_state_dict({name.removesuffix("_reverse"): p
                                        for name, p in bi.state_dict().items()
                                        if name.endswith("_reverse") == (suffix == "_reverse")})
    rng = np.random.default_rng(9)
    x = rng.uniform(-1, 1, (T, B, I))
    state = _random_state(bi, rng)
    full = lengths or [T] * B
    output, final = bi(x, state, lengths=lengths)
    width = output.shape[-1] // 2
    for d, suffix in enumerate(("", "_reverse")):
        state_d = tuple(s[d:d + 1] for s in _parts(state))
        sequence = x if d == 0 else _reverse_rows(x, full)
        run, run_final = halves[suffix](sequence, state_d if len(state_d) == 2 else state_d[0],
                                        lengths=lengths)
        if d == 1:
            run = _reverse_rows(run, full)
        assert_close(output[..., d * width:(d + 1) * width], run, np.float64, "forward",
                     f"direction {suffix or 'forward'} output")
        for k, (got, expected) in enumerate(zip(_parts(final), _parts(run_final))):
            assert_close(got[d:d + 1], expected, np.float64, "forward",
                         f"direction {suffix or 'forward'} final state {k}")


@BACKEND
def test_ragged_row_is_its_sequence_alone(variant, backend, assert_close):
    """With lengths, row b is what the layer gives for x[:lengths[b], b] alone (final state too),
    and its output past the end is exactly 0; the gradients past the end are exactly 0."""
    layer = _layer(variant, backend=backend, num_layers=2, bidirectional=True,
                   merge_mode="sum")
    rng = np.random.default_rng(10)
    x = rng.uniform(-1, 1, (T, B, I))
    state = _random_state(layer, rng)
    output, final = layer(x, state, lengths=LENGTHS)
    grad_x, _ = layer.backward(rng.standard_normal(output.shape))
    for b, n in enumerate(LENGTHS):
        alone = tuple(s[:, b:b + 1] for s in _parts(state))
        y, s = layer(x[:n, b:b + 1], alone if len(alone) == 2 else alone[0])
        assert_close(output[:n, b:b + 1], y, np.float64, "forward", f"row {b} output")
        for k, (got, expected) in enumerate(zip(_parts(final), _parts(s))):
            assert_close(got[:, b:b + 1], expected, np.float64, "forward", f"row {b} state {k}")
        np.testing.assert_array_equal(output[n:, b], 0, err_msg=f"row {b} past its end")
        np.testing.assert_array_equal(grad_x[n:, b], 0, err_msg=f"row {b} grad_x past its end")


# ----------------------------------------------------------------------------------------------
# Bad inputs: the error type, and a message that names the argument.

def _lstm():
    return rnnfast.LSTM(I, H, num_layers=2, bidirectional=True, dtype=np.float64)


def _good():
    """Good arguments for ``_lstm()``: x, state (h, c)."""
    rng = np.random.default_rng(11)
    return rng.uniform(-1, 1, (T, B, I)), (rng.uniform(-1, 1, (4, B, H)),
                                           rng.uniform(-1, 1, (4, B, H)))


def _forward_with(**changes):
    def call():
        x, state = _good()
        arguments = {"x": x, "state": state, "lengths": LENGTHS, **changes}
        _lstm()(arguments.pop("x"), **arguments)
    return call


def _backward_with(**changes):
    def call():
        layer = _lstm()
        x, state = _good()
        output, final = layer(x, state, lengths=LENGTHS)
        arguments = {"grad_output": np.ones_like(output), "grad_state": final, **changes}
        layer.backward(**arguments)
    return call


def _call(cls, *args, **kwargs):
    return lambda: cls(*args, **kwargs)


_X, _STATE = _good()
BAD_INPUTS = [
    # (id, call, error, argument named, text of the message)
    ("x-2d", _forward_with(x=_X[0]), ValueError, "x", "(3, 4)"),
    ("x-4d", _forward_with(x=_X[None]), ValueError, "x", "(1, 5, 3, 4)"),
    ("x-input-size", _forward_with(x=_X[..., :3]), ValueError, "x", "(5, 3, 3)"),
    ("x-empty", _forward_with(x=_X[:0], lengths=None), ValueError, "x", "(0, 3, 4)"),
    ("x-int", _forward_with(x=np.ones((T, B, I), np.int64)), TypeError, "x", "int64"),
    ("x-bool", _forward_with(x=np.ones((T, B, I), bool)), TypeError, "x", "bool"),
    ("x-complex", _forward_with(x=_X + 1j), TypeError, "x", "complex"),
    ("x-strings", _forward_with(x=[["a"]]), TypeError, "x", "<U1"),
    ("x-int-list", _forward_with(x=np.ones((T, B, I), int).tolist()), TypeError, "x", "int"),
    ("lengths-zero", _forward_with(lengths=[0, 5, 1]), ValueError, "lengths", "[1, 5]"),
    ("lengths-negative", _forward_with(lengths=[3, -1, 1]), ValueError, "lengths", "[1, 5]"),
    ("lengths-too-long", _forward_with(lengths=[3, 6, 1]), ValueError, "lengths", "[1, 5]"),
    ("lengths-too-many", _forward_with(lengths=[3, 5, 1, 2]), ValueError, "lengths", "(4,)"),
    ("lengths-too-few", _forward_with(lengths=[3, 5]), ValueError, "lengths", "(2,)"),
    ("lengths-2d", _forward_with(lengths=[[3, 5, 1]]), ValueError, "lengths", "(1, 3)"),
    ("lengths-float", _forward_with(lengths=[3.0, 5.0, 1.0]), TypeError, "lengths", "float"),
    ("lengths-bool", _forward_with(lengths=[True, True, True]), TypeError, "lengths", "bool"),
    ("state-not-tuple", _forward_with(state=_STATE[0]), TypeError, "state", "tuple"),
    ("state-triple", _forward_with(state=(*_STATE, _STATE[0])), TypeError, "state", "tuple"),
    ("state-h-shape", _forward_with(state=(_STATE[0][:2], _STATE[1])), ValueError, "state",
     "(2, 3, 6)"),
    ("state-c-shape", _forward_with(state=(_STATE[0], _STATE[1][..., :5])), ValueError,
     "state", "(4, 3, 5)"),
    ("state-batch", _forward_with(state=(_STATE[0][:, :2], _STATE[1][:, :2])), ValueError,
     "state", "(4, 2, 6)"),
    ("state-int", _forward_with(state=(_STATE[0].astype(int), _STATE[1])), TypeError, "state",
     "int"),
    ("gru-state-shape", lambda: rnnfast.GRU(I, H, 2)(_X, np.zeros((1, B, H))), ValueError,
     "state", "(1, 3, 6)"),
    ("gru-state-tuple", lambda: rnnfast.GRU(I, H)(_X, (np.zeros((1, B, H)),) * 2), ValueError,
     "state", "(2, 1, 3, 6)"),
    ("grad-output-shape", _backward_with(grad_output=np.ones((T, B, H))), ValueError,
     "grad_output", "(5, 3, 6)"),
    ("grad-output-int", _backward_with(grad_output=np.ones((T, B, 2 * H), int)), TypeError,
     "grad_output", "int"),
    ("grad-state-not-tuple", _backward_with(grad_state=_STATE[0]), TypeError, "grad_state",
     "tuple"),
    ("grad-state-shape", _backward_with(grad_state=(_STATE[0][:1], _STATE[1])), ValueError,
     "grad_state", "(1, 3, 6)"),
    ("merge-mode", _call(rnnfast.LSTM, I, H, merge_mode="max"), ValueError, "merge_mode", "max"),
    ("nonlinearity", _call(rnnfast.RNN, I, H, nonlinearity="sigmoid"), ValueError,
     "nonlinearity", "sigmoid"),
    ("proj-size", _call(rnnfast.LSTM, I, H, proj_size=H), ValueError, "proj_size", "6"),
    ("dropout-one", _call(rnnfast.GRU, I, H, dropout=1.0), ValueError, "dropout", "1.0"),
    ("dropout-negative", _call(rnnfast.GRU, I, H, dropout=-0.1), ValueError, "dropout", "-0.1"),
    ("dtype", _call(rnnfast.RNN, I, H, dtype=np.int32), TypeError, "dtype", "int32"),
    ("backend", _call(rnnfast.RNN, I, H, backend="cuda"), ValueError, "backend", "cuda"),
    ("hidden-size", _call(rnnfast.LSTM, I, 0), ValueError, "hidden_size", "0"),
    ("input-size", _call(rnnfast.LSTM, 2.5, H), ValueError, "input_size", "2.5"),
    ("num-layers", _call(rnnfast.GRU, I, H, num_layers=0), ValueError, "num_layers", "0"),
]


@pytest.mark.parametrize(("call", "error", "argument", "says"),
                         [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_naming_the_argument(call, error, argument, says):
    with pytest.raises(error, match=rf"(?<![\w]){re.escape(argument)}(?![\w])") as raised:
        call()
    assert says in str(raised.value)


def _bad_state_dicts():
    """(id, change to a good state_dict, error, text of the message). The bad entry is the
    layer's last key, so a load that wrote as it went would have changed every other weight."""
    last = "bias_hh_l1_reverse"
    return [
        ("unknown-key", lambda s: {**s, "weight_ih_l2": s["weight_ih_l0"]}, KeyError,
         "weight_ih_l2"),
        ("missing-key", lambda s: {k: v for k, v in s.items() if k != last}, KeyError, last),
        ("wrong-shape", lambda s: {**s, last: s[last][:-1]}, ValueError, f"{last}: expected "
         "shape (24,), got (23,)"),
        ("transposed", lambda s: {**s, "weight_hh_l1_reverse": s["weight_hh_l1_reverse"].T},
         ValueError, "weight_hh_l1_reverse"),
        ("int-tensor", lambda s: {**s, last: s[last].astype(int)}, TypeError, last),
        ("not-a-mapping", lambda s: list(s.items()), TypeError, "state_dict"),
    ]


@pytest.mark.parametrize(("change", "error", "says"), [c[1:] for c in _bad_state_dicts()],
                         ids=[c[0] for c in _bad_state_dicts()])
def test_failed_load_state_dict_leaves_the_weights_alone(change, error, says):
    layer = _lstm()
    before = layer.state_dict()
    new = {name: p + 1.0 for name, p in before.items()}  # every good entry differs
    with pytest.raises(error) as raised:
        layer.load_state_dict(change(new))
    assert says in str(raised.value)
    for name, p in layer.state_dict().items():
        np.testing.assert_array_equal(p, before[name], err_msg=f"{name} changed")
    layer.load_state_dict(new)  # and the good dictionary loads
    for name, p in layer.state_dict().items():
        np.testing.assert_array_equal(p, new[name], err_msg=name)


@pytest.mark.parametrize("make", [lambda: rnnfast.LSTM(48, 40, num_layers=2, bidirectional=True),
                                  lambda: rnnfast.GRU(24, 64, dtype=np.float64),
                                  lambda: rnnfast.nn.Linear(40, 24),
                                  lambda: rnnfast.nn.Embedding(30, 16)],
                         ids=["lstm", "gru-float64", "linear", "embedding"])
def test_parameters_start_on_64_byte_boundaries_and_stay_there(make):
    """The single-step kernels read weights in place with 64-byte loads (rnnfast._module)."""
    module = make()
    live = module.parameters()
    ids = {name: id(p) for name, p in live.items()}

    def check(when):
        for name, p in module.parameters().items():
            assert p.ctypes.data % 64 == 0, f"{name} {when}: {p.ctypes.data % 64} bytes past a line"
            assert p.flags.c_contiguous and p.flags.writeable, f"{name} {when}"
            assert id(p) == ids[name], f"{name} {when}: replaced, not written in place"

    check("new")
    module.load_state_dict({name: p * 0.5 for name, p in module.state_dict().items()})
    check("after load_state_dict")
    rnnfast.optim.Adam(live, lr=0.1).step({name: np.ones_like(p) for name, p in live.items()})
    check("after an Adam step")


# ----------------------------------------------------------------------------------------------
# Friendly inputs: converted once, giving the results of the strict ones.

def _results(layer, x, state=None, lengths=None):
    """[output, h(, c)] of an eval-mode forward."""
    return _flat(layer.eval()(x, state, lengths=lengths))


def _assert_same(got, expected, dtype, label, assert_close):
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == dtype, f"{label}: tensor {k} dtype {g.dtype}"
        assert_close(g, e, dtype, "forward", f"{label}: tensor {k}")


@BACKEND
def test_friendly_inputs_are_converted(backend, assert_close):
    layer = rnnfast.LSTM(I, H, bidirectional=True, dtype=np.float32, backend=backend)
    rng = np.random.default_rng(12)
    x = rng.uniform(-1, 1, (T, B, I)).astype(np.float32)
    state = tuple(rng.uniform(-1, 1, (2, B, H)).astype(np.float32) for _ in range(2))
    expected = _results(layer, x, state, LENGTHS)
    wide = np.zeros((T, 2 * B, 2 * I), np.float32)
    wide[:, ::2, ::2] = x
    for label, friendly_x, friendly_state, lengths in [
            ("lists", x.tolist(), [s.tolist() for s in state], list(LENGTHS)),
            ("float64", x.astype(np.float64), tuple(s.astype(np.float64) for s in state),
             LENGTHS),
            ("strided views", wide[:, ::2, ::2], tuple(s[:, ::-1][:, ::-1] for s in state),
             np.array(LENGTHS, np.int32)),
            ("Fortran order", np.asfortranarray(x), tuple(map(np.asfortranarray, state)),
             tuple(LENGTHS)),
            ("uint lengths", x, state, np.array(LENGTHS, np.uint8))]:
        _assert_same(_results(layer, friendly_x, friendly_state, lengths), expected,
                     np.float32, label, assert_close)
    half = x.astype(np.float16)  # float16 input runs on its float32 value
    _assert_same(_results(layer, half, state, LENGTHS),
                 _results(layer, half.astype(np.float32), state, LENGTHS), np.float32,
                 "float16", assert_close)


@BACKEND
def test_float64_layer_converts_float32_input(backend, assert_close):
    layer = rnnfast.GRU(I, H, num_layers=2, dtype=np.float64, backend=backend)
    x = np.random.default_rng(13).uniform(-1, 1, (T, B, I)).astype(np.float32)
    _assert_same(_results(layer, x), _results(layer, x.astype(np.float64)), np.float64,
                 "float32 x", assert_close)
    layer.train()
    output, _ = layer(x)
    grad_x, grad_state0 = layer.backward(np.ones(output.shape, np.float32),
                                         np.zeros((2, B, H), np.float32))
    assert output.dtype == grad_x.dtype == grad_state0.dtype == np.float64


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@BACKEND
def test_batch_first_is_the_transposed_layout(variant, backend, bidirectional, assert_close):
    options = {"backend": backend, "num_layers": 2, "bidirectional": bidirectional, "seed": 14}
    time_major = _layer(variant, **options)
    batch_major = _layer(variant, batch_first=True, **options)
    rng = np.random.default_rng(15)
    x = rng.uniform(-1, 1, (T, B, I))
    state = _random_state(time_major, rng)
    output, final = time_major(x, state, lengths=LENGTHS)
    output_bf, final_bf = batch_major(x.transpose(1, 0, 2), state, lengths=LENGTHS)
    assert_close(output_bf, output.transpose(1, 0, 2), np.float64, "forward", "output")
    for k, (got, expected) in enumerate(zip(_parts(final_bf), _parts(final))):
        assert_close(got, expected, np.float64, "forward", f"final state {k} (not transposed)")
    grad_output = rng.standard_normal(output.shape)
    grad_x, grad_state0 = time_major.backward(grad_output)
    grad_x_bf, grad_state0_bf = batch_major.backward(grad_output.transpose(1, 0, 2))
    assert_close(grad_x_bf, grad_x.transpose(1, 0, 2), np.float64, "backward", "grad_x")
    for k, (got, expected) in enumerate(zip(_parts(grad_state0_bf), _parts(grad_state0))):
        assert_close(got, expected, np.float64, "backward", f"grad_state0 {k}")
    for name, g in time_major.grads.items():
        assert_close(batch_major.grads[name], g, np.float64, "backward", f"grad {name}")


def test_load_state_dict_takes_array_likes_and_state_dict_gives_copies():
    layer = rnnfast.RNN(I, H, dtype=np.float64)
    source = rnnfast.RNN(I, H, dtype=np.float32, seed=16).state_dict()
    layer.load_state_dict({name: p.tolist() for name, p in source.items()})
    for name, p in layer.state_dict().items():
        assert p.dtype == np.float64
        np.testing.assert_array_equal(p, source[name], err_msg=name)
    copy = layer.state_dict()
    copy["weight_hh_l0"][...] = 0
    assert np.any(layer.state_dict()["weight_hh_l0"] != 0), "state_dict() is not a copy"
