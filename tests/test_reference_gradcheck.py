"""The NumPy reference proved on its own: its backward against central finite differences
(float64, tiny shapes, every gradient of every variant), and the properties SPEC.md promises
(coupled gates, inactive positions, read-only cache, None arguments, dtypes)."""

import copy

import numpy as np
import pytest

from rnnfast import reference as ref

# (T, B, I, H) and the scale of x (P = H // 2 with a projection: 1, then 2); the second
# shape saturates many gates.
SHAPES = [
    pytest.param((3, 2, 3, 2), 1.0, id="T3-B2-I3-H2"),
    pytest.param((4, 3, 2, 4), 3.0, id="T4-B3-I2-H4-saturating"),
]
DIRECTIONS = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
RAGGED = pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])


def _numeric_gradient(loss, a, step=1e-4):
    """dL/da [a.shape] by five-point central differences (error O(step^4)); perturbs a in place."""
    grad = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        original = a[index]
        values = []
        for k in (2, 1, -1, -2):
            a[index] = original + k * step
            values.append(loss())
        a[index] = original
        f2, f1, f_1, f_2 = values
        grad[index] = (8 * (f1 - f_1) - (f2 - f_2)) / (12 * step)
    return grad


def _active(case, T, B):
    """[T, B] bool: t < lengths[b]."""
    if case.lengths is None:
        return np.ones((T, B), dtype=bool)
    return np.arange(T)[:, None] < case.lengths[None, :]


def _relu_margin(case):
    """Smallest |pre-activation| of an RNN at an active position: the distance to relu's kink."""
    x, h0 = case.inputs["x"], case.inputs["h0"]
    h = case.forward(ref)[1]["h"]
    h_prev = (np.concatenate([h[1:], h0[None]]) if case.reverse
              else np.concatenate([h0[None], h[:-1]]))
    w = case.inputs
    a = x @ w["w_ih"].T + w["b_ih"] + h_prev @ w["w_hh"].T + w["b_hh"]
    return np.abs(a[_active(case, *x.shape[:2])]).min()


def _smooth_case(make_case, variant, shape, **options):
    """``make_case``, drawn again for relu until every pre-activation is 1e-2 away from the kink
    (finite differences step 2e-4 at most)."""
    case = make_case(variant, *shape, **options)
    seed = 0
    while variant.options.get("nonlinearity") == "relu" and _relu_margin(case) < 1e-2:
        case = make_case(variant, *shape, seed=seed, **options)
        seed += 1
    return case


@RAGGED
@DIRECTIONS
@pytest.mark.parametrize(("shape", "x_scale"), SHAPES)
def test_backward_matches_finite_differences(variant, shape, x_scale, reverse, ragged, make_case,
                                             assert_close):
    case = _smooth_case(make_case, variant, shape, reverse=reverse, ragged=ragged,
                        x_scale=x_scale)
    _, cache = case.forward(ref)
    grads = case.backward(ref, cache)
    assert set(grads) == {f"d{name}" for name in case.inputs}

    def loss():
        return case.loss(case.forward(ref, training=False)[0])

    for name, a in case.inputs.items():
        assert_close(grads[f"d{name}"], _numeric_gradient(loss, a), "float64", "backward",
                     f"{variant.id} d{name}")


@pytest.mark.parametrize("variant_id", ["lstm-coupled", "lstm-all"])
@DIRECTIONS
def test_coupled_forget_gate_has_zero_gradients(variant_id, reverse, make_case):
    case = make_case(variant_id, 4, 3, 2, 3, reverse=reverse, ragged=True)
    H = 3
    _, cache = case.forward(ref)
    i, f = cache["gates"][..., :H], cache["gates"][..., H:2 * H]
    active = _active(case, 4, 3)
    np.testing.assert_array_equal(f[active], 1 - i[active], err_msg="f = 1 - i")
    grads = case.backward(ref, cache)
    for name in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        np.testing.assert_array_equal(grads[name][H:2 * H], 0, err_msg=f"{name} f rows")
        assert np.any(grads[name][:H] != 0), f"{name} i rows"
    if "dw_peep" in grads:
        np.testing.assert_array_equal(grads["dw_peep"][1], 0, err_msg="dw_peep p_f")


@DIRECTIONS
def test_inactive_positions(variant, reverse, make_case):
    """y = 0, dx = 0 and zero gates where inactive; the state is carried; dy there is ignored."""
    T, B = 5, 4
    case = make_case(variant, T, B, 3, 4, reverse=reverse, ragged=True)
    outputs, cache = case.forward(ref)
    grads = case.backward(ref, cache)
    inactive = ~_active(case, T, B)
    assert inactive.any()
    np.testing.assert_array_equal(outputs["y"][inactive], 0, err_msg="y")
    np.testing.assert_array_equal(grads["dx"][inactive], 0, err_msg="dx")
    for field in ("gates", "hn"):
        if field in cache:
            np.testing.assert_array_equal(cache[field][inactive], 0, err_msg=field)

    h0, h = case.inputs["h0"], cache["h"]
    for b, length in enumerate(case.lengths):
        # Forward, rows keep their last state; reverse, they start at length - 1 from h0.
        carried = h0[b] if reverse else h[length - 1, b]
        for t in range(length, T):
            np.testing.assert_array_equal(h[t, b], carried, err_msg=f"h[{t}, {b}]")
    np.testing.assert_array_equal(outputs["h_n"], h[0] if reverse else h[T - 1], err_msg="h_n")
    if "c_n" in outputs:
        np.testing.assert_array_equal(outputs["c_n"], cache["c"][0] if reverse else
                                      cache["c"][T - 1], err_msg="c_n")

    noisy_dy = case.output_grads["dy"].copy()
    noisy_dy[inactive] = 1e3
    grads_noisy = case.backward(ref, cache, dy=noisy_dy)
    for name, g in grads.items():
        np.testing.assert_array_equal(grads_noisy[name], g, err_msg=f"{name} depends on dy "
                                      "at inactive positions")


@DIRECTIONS
def test_ragged_row_equals_its_sequence_alone(variant, reverse, make_case, assert_close):
    """Row b of a ragged batch behaves as the sequence x[:lengths[b], b] run on its own."""
    T, B = 5, 3
    case = make_case(variant, T, B, 3, 4, reverse=reverse, ragged=True)
    outputs, cache = case.forward(ref)
    grads = case.backward(ref, cache)
    for b, length in enumerate(case.lengths):
        row = {name: a[b:b + 1] for name, a in case.inputs.items() if name in ("h0", "c0")}
        row["x"] = case.inputs["x"][:length, b:b + 1]
        row_grads = {"dy": case.output_grads["dy"][:length, b:b + 1]}
        row_grads |= {name: g[b:b + 1] for name, g in case.output_grads.items() if name != "dy"}
        alone = type(case)(case.variant, {**case.inputs, **row}, row_grads, reverse, None)
        alone_outputs, alone_cache = alone.forward(ref)
        alone_grads = alone.backward(ref, alone_cache)
        for name, expected in alone_outputs.items():
            actual = outputs[name][:length, b:b + 1] if name == "y" else outputs[name][b:b + 1]
            assert_close(actual, expected, "float64", "forward", f"row {b} {name}")
        for name in ("dx", "dh0", "dc0"):
            if name in grads:
                actual = grads[name][:length, b:b + 1] if name == "dx" else grads[name][b:b + 1]
                assert_close(actual, alone_grads[name], "float64", "backward", f"row {b} {name}")


@RAGGED
@DIRECTIONS
def test_backward_twice_is_identical_and_leaves_inputs_alone(variant, reverse, ragged,
                                                             make_case):
    case = make_case(variant, 4, 3, 3, 4, reverse=reverse, ragged=ragged)
    _, cache = case.forward(ref)
    before = copy.deepcopy((case.inputs, case.output_grads, cache))
    first = case.backward(ref, cache)
    second = case.backward(ref, cache)
    assert first.keys() == second.keys()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert cache.keys() == before[2].keys()
    for saved, now in zip(before, (case.inputs, case.output_grads, cache)):
        for name in saved:
            np.testing.assert_array_equal(now[name], saved[name], err_msg=f"{name} modified")


def test_cache_fields_and_inference(variant, make_case):
    """The cache has exactly SPEC's fields; training=False returns None and the same outputs."""
    case = make_case(variant, 3, 2, 3, 4, ragged=True)
    outputs, cache = case.forward(ref)
    T, B, H, P = 3, 2, 4, case.inputs["h0"].shape[1]
    expected = {
        "lstm": {"gates": (T, B, 4 * H), "c": (T, B, H), "h": (T, B, P)},
        "gru": {"gates": (T, B, 3 * H), "h": (T, B, H)},
        "rnn": {"h": (T, B, H)},
    }[variant.cell]
    if variant.options.get("linear_before_reset"):
        expected["hn"] = (T, B, H)
    assert {name: a.shape for name, a in cache.items()} == expected
    inference_outputs, no_cache = case.forward(ref, training=False)
    assert no_cache is None
    for name, a in outputs.items():
        np.testing.assert_array_equal(inference_outputs[name], a, err_msg=name)


def test_none_means_zeros(variant, make_case):
    """None biases are zero biases; None output gradients are zeros; db_* are still returned."""
    case = make_case(variant, 3, 2, 3, 4, ragged=True)
    zero = {name: np.zeros_like(a) for name, a in case.inputs.items() if name.startswith("b_")}
    zero_outputs, zero_cache = case.forward(ref, **zero)
    none_outputs, none_cache = case.forward(ref, b_ih=None, b_hh=None)
    for name, a in zero_outputs.items():
        np.testing.assert_array_equal(none_outputs[name], a, err_msg=name)
    zero_grads = case.backward(ref, zero_cache, **{n: np.zeros_like(g) for n, g in
                                                   case.output_grads.items()})
    none_grads = case.backward(ref, none_cache, **dict.fromkeys(case.output_grads))
    assert none_grads.keys() == zero_grads.keys() >= {"db_ih", "db_hh"}
    for name, g in zero_grads.items():
        np.testing.assert_array_equal(none_grads[name], g, err_msg=name)
        np.testing.assert_array_equal(g, 0, err_msg=name)


@DIRECTIONS
def test_float32_runs_in_float32(variant, reverse, make_case, assert_close):
    """float32 in, float32 out (cache and gradients too), within the float32 tolerances of the
    same inputs run in float64."""
    case = make_case(variant, 6, 3, 5, 7, reverse=reverse, ragged=True, x_scale=2.0,
                     dtype=np.float32)
    outputs, cache = case.forward(ref)
    grads = case.backward(ref, cache)
    exact = case.astype(np.float64)
    outputs64, cache64 = exact.forward(ref)
    grads64 = exact.backward(ref, cache64)
    for kind, got, expected in [("forward", outputs, outputs64), ("forward", cache, cache64),
                                ("backward", grads, grads64)]:
        for name, a in got.items():
            assert a.dtype == np.float32, name
            assert_close(a, expected[name], "float32", kind, f"{variant.id} {name}")


def test_gru_variants_agree_when_the_reset_gate_is_open(make_case, assert_close):
    """With r = 1 both GRU formulations reduce to n = tanh(xn + h_prev W_hn^T + b_hn)."""
    T, B, H = 4, 3, 4
    case = make_case("gru", T, B, 3, H, ragged=True)
    b_ih = case.inputs["b_ih"].copy()
    b_ih[:H] = 60.0  # σ(60 + O(1)) rounds to 1 in float64
    runs = {lbr: case.forward(ref, linear_before_reset=lbr, b_ih=b_ih) for lbr in (True, False)}
    for _, cache in runs.values():
        np.testing.assert_array_equal(cache["gates"][..., :H][_active(case, T, B)], 1.0)
    for name in ("y", "h_n"):
        assert_close(runs[False][0][name], runs[True][0][name], "float64", "forward", name)
    lbr1, lbr0 = (case.forward(ref, linear_before_reset=lbr)[0]["y"] for lbr in (True, False))
    assert not np.allclose(lbr1, lbr0), "with r < 1 the two formulations differ"
