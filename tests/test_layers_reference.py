"""The layers on the compiled kernels (``backend="core"``) against the same classes on the NumPy
reference (``backend="reference"``), then the layer code itself against finite differences.

The two backends share every line of layer code (the stack, the merge of the two directions,
dropout, lengths, batch_first), so comparing them checks the kernels as a whole stack drives them:
every cell variant x num_layers x direction and merge mode x batch_first x full or ragged batch,
with a random initial state and random (not ones) upstream gradients; output, final state,
grad_x, grad_state0 and every parameter gradient, one assertion per named tensor. float64 covers
the whole product; float32 (compared with the reference in float64 on the same float32 weights
and inputs) a representative subset.

What the backends share, a comparison of the backends cannot see. So dropout is checked on its
own (reproducible, training only, between layers only) and a whole 2-layer bidirectional stack
with dropout, in every merge mode, is checked against central finite differences.
"""

import zlib

import numpy as np
import pytest

import rnnfast

T, B, I, H = 5, 3, 4, 6
LENGTHS = [3, 5, 1]  # any order; one row of full length, one of length 1
CLASSES = {"lstm": rnnfast.LSTM, "gru": rnnfast.GRU, "rnn": rnnfast.RNN}

# (id, bidirectional, merge_mode): one direction, or two merged in each way.
DIRECTIONS = [("uni", False, "concat"), ("bi-concat", True, "concat"), ("bi-sum", True, "sum"),
              ("bi-ave", True, "ave"), ("bi-mul", True, "mul")]
DIRECTION = pytest.mark.parametrize(("bidirectional", "merge_mode"),
                                    [d[1:] for d in DIRECTIONS], ids=[d[0] for d in DIRECTIONS])
NUM_LAYERS = pytest.mark.parametrize("num_layers", [1, 2, 3], ids=lambda n: f"L{n}")
BATCH_FIRST = pytest.mark.parametrize("batch_first", [False, True], ids=["TB", "BT"])
LENGTHS_OR_NONE = pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "ragged"])


def _layer(variant, dtype, backend, seed=0, **options):
    """A layer of ``variant`` (a conftest Variant) with sizes I, H; a projection has H // 2."""
    kwargs = dict(variant.options)  # coupled / linear_before_reset / nonlinearity
    if variant.peephole:
        kwargs["peephole"] = True
    if variant.projection:
        kwargs["proj_size"] = H // 2
    return CLASSES[variant.cell](I, H, dtype=dtype, seed=seed, backend=backend, **kwargs,
                                 **options)


def _state(variant, n, draw, batch=B):
    """A state (or state gradient) of ``variant`` for n = layers * directions: h [n, batch, H_out],
    and c [n, batch, H] for an LSTM, each from ``draw(shape)``."""
    h = draw((n, batch, H // 2 if variant.projection else H))
    return (h, draw((n, batch, H))) if variant.cell == "lstm" else h


def _named(prefix, state):
    """{"<prefix>h": h[, "<prefix>c": c]} from a state."""
    parts = state if isinstance(state, tuple) else (state,)
    return {f"{prefix}{name}": a for name, a in zip("hc", parts)}


def _run(layer, x, state, lengths, grad_output, grad_state):
    """Forward (training) and backward of ``layer``: every result as a dict of named tensors."""
    output, final = layer(x, state, lengths=lengths)
    grad_x, grad_state0 = layer.backward(grad_output, grad_state)
    return {"output": output, **_named("final ", final), "grad_x": grad_x,
            **_named("grad_state0 ", grad_state0),
            **{f"grad {name}": g for name, g in layer.grads.items()}}


def _compare(core, reference, dtype, label, assert_close):
    """Check two ``_run`` results tensor by tensor: names, dtypes, values."""
    assert core.keys() == reference.keys(), f"{label}: names"
    for name, expected in reference.items():
        assert core[name].dtype == dtype, f"{label} {name}: dtype {core[name].dtype}"
        kind = "backward" if name.startswith("grad") else "forward"
        assert_close(core[name], expected, dtype, kind, f"{label} {name}")


def _check_backends(variant, dtype, num_layers, bidirectional, merge_mode, batch_first, lengths,
                    assert_close, steps=T, batch=B):
    """Run one configuration on both backends and compare: core in ``dtype``, the reference in
    float64 with the same weights (float32 weights and inputs are exact in float64)."""
    options = {"num_layers": num_layers, "bidirectional": bidirectional, "merge_mode": merge_mode,
               "batch_first": batch_first}
    core = _layer(variant, dtype, "core", **options)
    reference = _layer(variant, np.float64, "reference", **options)
    if dtype == np.float64:  # same seed, same weights, whatever the backend
        core_weights = core.state_dict()
        for name, p in reference.state_dict().items():
            np.testing.assert_array_equal(core_weights[name], p, err_msg=f"init {name}")
    else:
        reference.load_state_dict(core.state_dict())
    label = (f"{variant.id} L{num_layers} {'bi-' + merge_mode if bidirectional else 'uni'} "
             f"{'BT' if batch_first else 'TB'} {'ragged' if lengths else 'full'} T{steps} B{batch}")
    rng = np.random.default_rng(zlib.crc32(label.encode()))
    n = num_layers * (2 if bidirectional else 1)
    width = H // 2 if variant.projection else H
    if bidirectional and merge_mode == "concat":
        width *= 2
    x = rng.uniform(-1, 1, (batch, steps, I) if batch_first else (steps, batch, I)).astype(dtype)
    grad_output = rng.standard_normal(x.shape[:2] + (width,)).astype(dtype)
    state = _state(variant, n, lambda shape: rng.uniform(-1, 1, shape).astype(dtype), batch)
    grad_state = _state(variant, n, lambda shape: rng.standard_normal(shape).astype(dtype), batch)
    arguments = (x, state, lengths, grad_output, grad_state)
    _compare(_run(core, *arguments), _run(reference, *arguments), dtype, label, assert_close)


@LENGTHS_OR_NONE
@BATCH_FIRST
@DIRECTION
@NUM_LAYERS
def test_core_matches_reference_float64(variant, num_layers, bidirectional, merge_mode,
                                        batch_first, lengths, assert_close):
    _check_backends(variant, np.float64, num_layers, bidirectional, merge_mode, batch_first,
                    lengths, assert_close)


# float32: every variant on a subset that still reaches every layer count, merge mode,
# layout and batch kind at least once.
FLOAT32_CONFIGS = [
    pytest.param(1, False, "concat", False, None, id="L1-uni-TB-full"),
    pytest.param(1, True, "sum", True, LENGTHS, id="L1-bi-sum-BT-ragged"),
    pytest.param(2, True, "concat", True, LENGTHS, id="L2-bi-concat-BT-ragged"),
    pytest.param(2, False, "concat", False, LENGTHS, id="L2-uni-TB-ragged"),
    pytest.param(3, True, "mul", False, LENGTHS, id="L3-bi-mul-TB-ragged"),
    pytest.param(3, True, "ave", True, None, id="L3-bi-ave-BT-full"),
]


@pytest.mark.parametrize(("num_layers", "bidirectional", "merge_mode", "batch_first", "lengths"),
                         FLOAT32_CONFIGS)
def test_core_matches_reference_float32(variant, num_layers, bidirectional, merge_mode,
                                        batch_first, lengths, assert_close):
    _check_backends(variant, np.float32, num_layers, bidirectional, merge_mode, batch_first,
                    lengths, assert_close)


@pytest.mark.parametrize(("steps", "batch", "lengths"), [(1, 1, None), (1, 2, [1, 1]),
                                                         (4, 1, [3])],
                         ids=["T1-B1", "T1-B2-ragged", "T4-B1-ragged"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_core_matches_reference_tiny(variant, dtype, steps, batch, lengths, assert_close):
    """One step, one sequence: the edges of every loop."""
    _check_backends(variant, dtype, 2, True, "concat", False, lengths, assert_close, steps,
                    batch)


# ----------------------------------------------------------------------------------------------
# Dropout.

def _inputs(seed, n):
    """x [T, B, I] and a random initial state (h, c) of a plain LSTM with n = layers *
    directions."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (T, B, I)), (rng.uniform(-1, 1, (n, B, H)),
                                           rng.uniform(-1, 1, (n, B, H)))


def test_dropout_is_the_same_on_both_backends(variant, assert_close):
    """Same seed, same masks: a 3-layer stack with dropout agrees across the backends in every
    tensor, where a layer with the same weights but another seed (another mask) does not."""
    options = {"num_layers": 3, "bidirectional": True, "dropout": 0.4, "seed": 11}
    core = _layer(variant, np.float64, "core", **options)
    reference = _layer(variant, np.float64, "reference", **options)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (T, B, I))
    grad_output = rng.standard_normal((T, B, 2 * (H // 2 if variant.projection else H)))
    state = _state(variant, 6, lambda shape: rng.uniform(-1, 1, shape))
    grad_state = _state(variant, 6, rng.standard_normal)
    arguments = (x, state, LENGTHS, grad_output, grad_state)
    expected = _run(reference, *arguments)
    _compare(_run(core, *arguments), expected, np.float64, f"{variant.id} dropout", assert_close)

    # The comparison sees the mask: another seed, with the same weights, gives another output.
    other = _layer(variant, np.float64, "reference", **{**options, "seed": 12})
    other.load_state_dict(reference.state_dict())
    other_output = other(x, state, lengths=LENGTHS)[0]
    assert np.max(np.abs(other_output - expected["output"])) > 1e-3, "masks do not depend on seed"


@pytest.mark.parametrize("backend", ["core", "reference"])
def test_dropout_only_in_training_and_only_between_layers(backend, assert_close):
    x, state = _inputs(3, 4)
    options = {"num_layers": 2, "bidirectional": True, "dtype": np.float64, "backend": backend}
    plain = rnnfast.LSTM(I, H, seed=5, **options)
    dropped = rnnfast.LSTM(I, H, dropout=0.5, seed=6, **options)
    dropped.load_state_dict(plain.state_dict())
    expected = plain(x, state)[0]

    training = dropped(x, state)[0]
    assert np.max(np.abs(training - expected)) > 1e-3, "dropout changed nothing in training"
    # The last layer's output is never dropped: no exact zeros (a full batch).
    assert np.count_nonzero(training) == training.size, "the last layer's output was dropped"
    dropped.eval()
    assert_close(dropped(x, state)[0], expected, np.float64, "forward", "eval output")

    # A single layer has no layer after it, so dropout never applies.
    single = rnnfast.LSTM(I, H, dropout=0.5, seed=7, dtype=np.float64, backend=backend)
    assert_close(single(x)[0], single.eval()(x)[0], np.float64, "forward", "one layer")


@pytest.mark.parametrize("backend", ["core", "reference"])
def test_dropout_is_reproducible_from_the_seed(backend, assert_close):
    """Each training forward draws a new mask; a layer built with the same seed draws the same
    sequence of masks."""
    x, state = _inputs(4, 6)
    options = {"num_layers": 3, "bidirectional": True, "dropout": 0.3, "seed": 21,
               "dtype": np.float64, "backend": backend}
    first, second = rnnfast.LSTM(I, H, **options), rnnfast.LSTM(I, H, **options)
    outputs = [first(x, state)[0] for _ in range(2)]
    assert np.max(np.abs(outputs[0] - outputs[1])) > 1e-3, "the mask did not change"
    for k, expected in enumerate(outputs):
        assert_close(second(x, state)[0], expected, np.float64, "forward", f"forward {k}")


# ----------------------------------------------------------------------------------------------
# The layer code against finite differences.

def _numeric_gradient(loss, a, step=1e-3):
    """dL/da [a.shape] by five-point central differences (error O(step^4)), perturbing ``a`` in
    place and restoring it."""
    stencil = {-2: 1.0, -1: -8.0, 1: 8.0, 2: -1.0}  # weights of L(a + k step), over 12 step
    grad = np.empty_like(a)
    for index in np.ndindex(a.shape):
        original = a[index]
        total = 0.0
        for k, weight in stencil.items():
            a[index] = original + k * step
            total += weight * loss()
        a[index] = original
        grad[index] = total / (12 * step)
    return grad


# Tiny layers: (class, options). Every merge mode on the LSTM, and each kind of cell once.
FD_LAYERS = [
    pytest.param(rnnfast.LSTM, {"merge_mode": "concat"}, id="lstm-concat"),
    pytest.param(rnnfast.LSTM, {"merge_mode": "sum"}, id="lstm-sum"),
    pytest.param(rnnfast.LSTM, {"merge_mode": "ave"}, id="lstm-ave"),
    pytest.param(rnnfast.LSTM, {"merge_mode": "mul"}, id="lstm-mul"),
    pytest.param(rnnfast.LSTM, {"peephole": True, "coupled": True, "proj_size": 1,
                                "merge_mode": "sum"}, id="lstm-all-sum"),
    pytest.param(rnnfast.GRU, {"linear_before_reset": False, "merge_mode": "ave"},
                 id="gru-lbr0-ave"),
    pytest.param(rnnfast.RNN, {"merge_mode": "concat", "batch_first": True},
                 id="rnn-tanh-concat-BT"),
]


@pytest.mark.parametrize(("cls", "options"), FD_LAYERS)
def test_stack_with_dropout_matches_finite_differences(cls, options, assert_close):
    """A whole 2-layer bidirectional stack with dropout 0.5 and ragged lengths, float64, on the
    reference: backward against central differences of L = sum(output * g) + sum(h_n * g_h)
    [+ sum(c_n * g_c)] for x, the initial state and every parameter.

    The mask must be the same in every evaluation of L. It is the first draw of the layer's
    dropout generator, a function of the seed alone (not of the weights or the inputs), so a
    layer built afresh with the same seed for each evaluation replays it, through the public API.
    """
    Tf, Bf, If, Hf = 3, 2, 2, 2
    lengths = [1, 3]

    def fresh(params):
        layer = cls(If, Hf, num_layers=2, bidirectional=True, dropout=0.5, seed=31,
                    dtype=np.float64, backend="reference", **options)
        if params is not None:
            layer.load_state_dict(params)
        return layer

    params = fresh(None).state_dict()
    rng = np.random.default_rng(32)
    x = rng.uniform(-1, 1, (Bf, Tf, If) if options.get("batch_first") else (Tf, Bf, If))
    probe_output, probe_state = fresh(params).eval()(x, lengths=lengths)
    states = [rng.uniform(-1, 1, s.shape) for s in _named("", probe_state).values()]
    grad_output = rng.standard_normal(probe_output.shape)
    grad_states = [rng.standard_normal(s.shape) for s in states]

    def pack(arrays):
        return tuple(arrays) if len(arrays) == 2 else arrays[0]

    def loss():
        output, final = fresh(params)(x, pack(states), lengths=lengths)
        finals = final if isinstance(final, tuple) else (final,)
        return float(np.sum(output * grad_output)
                     + sum(np.sum(f * g) for f, g in zip(finals, grad_states)))

    layer = fresh(params)
    output = layer(x, pack(states), lengths=lengths)[0]
    grad_x, grad_state0 = layer.backward(grad_output, pack(grad_states))
    grad_state0 = grad_state0 if isinstance(grad_state0, tuple) else (grad_state0,)

    # The mask is really there: without dropout the output is another.
    no_dropout = fresh(params).eval()(x, pack(states), lengths=lengths)[0]
    assert np.max(np.abs(output - no_dropout)) > 1e-2 * np.max(np.abs(no_dropout)), (
        "dropout changed nothing")

    assert_close(grad_x, _numeric_gradient(loss, x), np.float64, "backward", "grad_x")
    for k, (got, s) in enumerate(zip(grad_state0, states)):
        assert_close(got, _numeric_gradient(loss, s), np.float64, "backward", f"grad_state0[{k}]")
    assert layer.grads.keys() == params.keys()
    for name, p in params.items():
        assert_close(layer.grads[name], _numeric_gradient(loss, p), np.float64, "backward",
                     f"grad {name}")
