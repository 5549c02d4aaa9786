"""rnnfast._core against the NumPy reference, tensor by tensor.

Every cell variant x dtype x shape (B = 1, T = 1, sizes that are not multiples of the SIMD width)
x direction x full or ragged batch: y, h_n, c_n, every cache field and every gradient, each in its
own assertion. float32 kernels are compared with the reference run in float64 on the same
(float32-representable) inputs. Then the kernels' own promises: read-only cache, inference
without a cache, None arguments, exact zeros, and results independent of the thread count.
"""

import copy
import dataclasses
import importlib

import numpy as np
import pytest

from rnnfast import reference as ref

# (T, B, I, H): B=1 and T=1; sizes that are not multiples of the SIMD width; a single step of a
# small batch over several hidden-unit tiles (the unpacked, direct weight path of short calls, see
# reads_weights_directly in seq.h); a batch big enough to run threaded; hidden units cut into uneven
# tiles (H = 200: 8 tiles of 16 to 32), read directly in passes of 4 and 1 rows (B = 5); GEMMs over
# more than one K-block of the kernels (kKC = 512 in gemm.h): the input projection (I = 530) and
# the weight gradients (T*B = 540), then the recurrent GEMM, packed (H = 520, T = 5) and direct
# (T = 2); the direct path over two steps of a ragged batch (T*B = 4).
SHAPES = [
    (1, 1, 3, 5), (7, 3, 5, 9), (13, 4, 17, 33), (1, 3, 19, 70), (5, 16, 64, 64), (3, 5, 7, 200),
    (9, 60, 530, 24), (5, 3, 8, 520), (2, 3, 8, 520), (2, 2, 11, 40),
]
SHAPE = pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
DTYPE = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
DIRECTIONS = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
RAGGED = pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])


@pytest.fixture(scope="module")
def core():
    """rnnfast._core. Failing to import it is an error, never a skip: these tests need it."""
    return importlib.import_module("rnnfast._core")


@pytest.fixture
def keep_threads(core):
    """Restore the kernels' thread count after the test."""
    n = core.get_num_threads()
    yield
    core.set_num_threads(n)


def _run(module, case, **overrides):
    """Forward (training) and backward of ``case`` on ``module``: (outputs, cache, grads)."""
    outputs, cache = case.forward(module, **overrides)
    return outputs, cache, case.backward(module, cache)


def _assert_runs_close(got, expected, dtype, label, assert_close):
    """Compare two ``_run`` results tensor by tensor: names, dtypes, then values."""
    for kind, prefix, got_tensors, expected_tensors in [
            ("forward", "", got[0], expected[0]),
            ("forward", "cache ", got[1], expected[1]),
            ("backward", "", got[2], expected[2])]:
        assert got_tensors.keys() == expected_tensors.keys(), f"{label} {prefix}names"
        for name, a in expected_tensors.items():
            assert got_tensors[name].dtype == dtype, f"{label} {prefix}{name} dtype"
            assert_close(got_tensors[name], a, dtype, kind, f"{label} {prefix}{name}")


def _assert_all_equal(got, expected, what):
    assert got.keys() == expected.keys(), what
    for name, a in expected.items():
        np.testing.assert_array_equal(got[name], a, err_msg=f"{what} {name}")


@RAGGED
@DIRECTIONS
@SHAPE
@DTYPE
def test_core_matches_reference(core, variant, dtype, shape, reverse, ragged, make_case,
                                assert_close):
    case = make_case(variant, *shape, dtype=dtype, reverse=reverse, ragged=ragged, x_scale=2.0)
    _assert_runs_close(_run(core, case), _run(ref, case.astype(np.float64)), dtype, variant.id,
                       assert_close)


@RAGGED
@DIRECTIONS
def test_core_backward_reads_the_reference_cache(core, variant, reverse, ragged, make_case,
                                                 assert_close):
    """The cache fields mean what SPEC.md says: the kernels' backward runs on the reference's."""
    case = make_case(variant, 7, 3, 5, 9, reverse=reverse, ragged=ragged, x_scale=2.0)
    _, cache = case.forward(ref)
    expected = case.backward(ref, cache)
    got = case.backward(core, cache)
    assert got.keys() == expected.keys()
    for name, a in expected.items():
        assert_close(got[name], a, np.float64, "backward", f"{variant.id} {name}")


@RAGGED
@DTYPE
def test_core_backward_twice_is_identical_and_leaves_inputs_alone(core, variant, dtype, ragged,
                                                                  make_case):
    case = make_case(variant, 7, 3, 5, 9, dtype=dtype, ragged=ragged)
    _, cache = case.forward(core)
    before = copy.deepcopy((case.inputs, case.output_grads, cache))
    first = case.backward(core, cache)
    second = case.backward(core, cache)
    _assert_all_equal(second, first, f"{variant.id} second backward")
    for saved, now, what in zip(before, (case.inputs, case.output_grads, cache),
                                ("input", "output gradient", "cache")):
        _assert_all_equal(now, saved, f"{variant.id} {what} modified:")


@pytest.mark.parametrize("kind", ["ragged-batch", "cell-step", "short-call", "gemm-shares",
                                  "one-thread-walk"])
@DIRECTIONS
@DTYPE
def test_core_results_do_not_depend_on_thread_count(core, keep_threads, variant, dtype, reverse,
                                                    kind, make_case):
    # Big enough that a step runs on several threads (rnnfast runs small steps on one thread).
    if kind == "ragged-batch":
        case = make_case(variant, 7, 16, 33, 97, dtype=dtype, reverse=reverse, ragged=True,
                         x_scale=2.0)
        case.lengths[:] = np.minimum(case.lengths, 6)  # all shorter than T: the cut walk, its fills
    elif kind == "cell-step":  # one step of two rows: weights read in place, each tile
        # projecting its own inputs
        case = make_case(variant, 1, 2, 250, 256, dtype=dtype, reverse=reverse, x_scale=2.0)
    elif kind == "short-call":  # two steps of nine rows: still read in place, in passes of 4, 4
        # and 1 rows
        case = make_case(variant, 2, 9, 250, 256, dtype=dtype, reverse=reverse, x_scale=2.0)
    elif kind == "one-thread-walk":  # steps too small for two threads, the input projection
        # and the GEMMs after the backward walk large enough for all of them (gemm_threads in
        # parallel.h): training projects first, inference in a pipeline of 3 chunks (forward_scan)
        case = make_case(variant, 600, 1, 64, 96, P=64, dtype=dtype, reverse=reverse,
                         ragged=True, x_scale=2.0)
    else:  # GEMMs over all steps whose pieces the threads share out by work (for_each_tile in
        # gemm.h): 264 rows of projection (row tiles of 96, 96 and 72) by G*H = 200, 150 or 50
        # columns in strips of 32, the last one partial, most shares ending inside a strip
        case = make_case(variant, 13, 24, 40, 50, dtype=dtype, reverse=reverse, x_scale=2.0)
    results = {}
    for n in (1, 2, 3):
        core.set_num_threads(n)
        assert core.get_num_threads() == n
        results[n] = (*_run(core, case), case.forward(core, training=False)[0])
        _assert_all_equal(results[n][3], results[n][0], f"{variant.id} {n} threads: inference")
    for n in (2, 3):
        for what, got, expected in zip(("outputs", "cache", "grads"), results[n], results[1]):
            _assert_all_equal(got, expected, f"{variant.id} {n} threads vs 1: {what}")


def _at_offset(a, elements):
    """A C-contiguous copy of ``a`` whose data starts ``elements`` elements past a 64-byte
    boundary."""
    raw = np.empty(a.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + elements * a.itemsize
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


# A short call reads its weights in place (reads_weights_directly in csrc/seq.h) wherever they
# start. Rows that fill whole registers (I = 48, H = 32) all start at the same offset from a register
# boundary, and the dot products then load from the boundary before each row (dot_rows in
# csrc/gemm.h); rows that do not (I = 21, H = 40) are loaded where they start. Passes of 4 and 1 rows
# (B = 5).
@pytest.mark.parametrize("I,H", [(48, 32), (21, 40)], ids=["rows-fill-registers", "odd-rows"])
@DTYPE
def test_core_results_do_not_depend_on_weight_alignment(core, variant, dtype, I, H, make_case):
    case = make_case(variant, 1, 5, I, H, dtype=dtype, x_scale=2.0)
    lanes = 64 // np.dtype(dtype).itemsize
    weights = [n for n in ("w_ih", "w_hh", "w_hr") if case.inputs.get(n) is not None]

    def at(offset):  # each weight at its own offset
        return {n: _at_offset(case.inputs[n], (offset * (1 + 2 * k)) % lanes)
                for k, n in enumerate(weights)}

    expected, _ = case.forward(core, training=False, **at(0))
    for offset in range(1, lanes):
        got, _ = case.forward(core, training=False, **at(offset))
        _assert_all_equal(got, expected, f"{variant.id} weights {offset} elements off:")


@RAGGED
@DTYPE
def test_core_inference_returns_no_cache(core, variant, dtype, ragged, make_case):
    """training=False gives cache None and exactly the outputs of training=True."""
    case = make_case(variant, 7, 3, 5, 9, dtype=dtype, ragged=ragged)
    training, _ = case.forward(core, training=True)
    inference, cache = case.forward(core, training=False)
    assert cache is None
    _assert_all_equal(inference, training, f"{variant.id} inference")


@DTYPE
def test_core_none_means_zeros(core, variant, dtype, make_case):
    """None biases are zero biases; None output gradients are zeros; db_* are still returned."""
    case = make_case(variant, 7, 3, 5, 9, dtype=dtype, ragged=True)
    zero_biases = {n: np.zeros_like(a) for n, a in case.inputs.items() if n.startswith("b_")}
    zero_outputs, zero_cache = case.forward(core, **zero_biases)
    none_outputs, none_cache = case.forward(core, b_ih=None, b_hh=None)
    _assert_all_equal(none_outputs, zero_outputs, f"{variant.id} None biases")
    zero_grads = case.backward(core, zero_cache,
                               **{n: np.zeros_like(g) for n, g in case.output_grads.items()})
    none_grads = case.backward(core, none_cache, **dict.fromkeys(case.output_grads))
    assert {"db_ih", "db_hh"} <= none_grads.keys()
    _assert_all_equal(none_grads, zero_grads, f"{variant.id} None output gradients")
    for name, g in none_grads.items():
        np.testing.assert_array_equal(g, 0, err_msg=f"{variant.id} {name}")


@DIRECTIONS
@DTYPE
def test_core_inactive_positions_are_exact_zeros(core, variant, dtype, reverse, make_case):
    """y = 0, dx = 0 and cached gates = 0 exactly where t >= lengths[b]; dy there is ignored."""
    T, B = 7, 3
    case = make_case(variant, T, B, 5, 9, dtype=dtype, reverse=reverse, ragged=True)
    outputs, cache, grads = _run(core, case)
    inactive = np.arange(T)[:, None] >= case.lengths[None, :]
    assert inactive.any()
    np.testing.assert_array_equal(outputs["y"][inactive], 0, err_msg=f"{variant.id} y")
    np.testing.assert_array_equal(grads["dx"][inactive], 0, err_msg=f"{variant.id} dx")
    for field in ("gates", "hn"):
        if field in cache:
            np.testing.assert_array_equal(cache[field][inactive], 0,
                                          err_msg=f"{variant.id} cache {field}")
    noisy_dy = case.output_grads["dy"].copy()
    noisy_dy[inactive] = 1e3
    _assert_all_equal(case.backward(core, cache, dy=noisy_dy), grads,
                      f"{variant.id} with dy at inactive positions")


def _short_case(make_case, variant, T, B, I, H, dtype, reverse, longest):
    """A ragged case whose longest sequence ends at ``longest`` < T: the kernels then compute only
    the first ``longest`` steps and fill the others (see active_steps in csrc/seq.h)."""
    case = make_case(variant, T, B, I, H, dtype=dtype, reverse=reverse, ragged=True)
    lengths = np.minimum(case.lengths, longest)
    lengths[0] = longest
    return dataclasses.replace(case, lengths=lengths)


# The sums over active rows after the backward walk span two K-blocks (kKC = 512) in T20-longest18.
@pytest.mark.parametrize("shape,longest", [((7, 3, 5, 9), 4), ((9, 60, 530, 24), 8),
                                           ((20, 60, 8, 16), 18), ((6, 2, 4, 6), 1),
                                           ((5, 16, 64, 64), 2)],
                         ids=["T7-longest4", "T9-longest8-I530", "T20-longest18-kblocks",
                              "T6-longest1-direct", "T5-longest2-threaded"])
@DIRECTIONS
@DTYPE
def test_core_matches_reference_when_every_sequence_ends_early(core, variant, dtype, reverse,
                                                               shape, longest, make_case,
                                                               assert_close):
    """Past the longest sequence: y, dx and cached gates 0 and states carried, as the reference."""
    case = _short_case(make_case, variant, *shape, dtype, reverse, longest)
    got = _run(core, case)
    _assert_runs_close(got, _run(ref, case.astype(np.float64)), dtype,
                       f"{variant.id} longest={longest}", assert_close)
    T = shape[0]
    np.testing.assert_array_equal(got[0]["y"][longest:], 0)
    np.testing.assert_array_equal(got[2]["dx"][longest:], 0)
    for field in ("gates", "hn"):
        if field in got[1]:
            np.testing.assert_array_equal(got[1][field][longest:], 0)
    carried = case.inputs["h0"] if reverse else got[1]["h"][longest - 1]
    for t in range(longest, T):
        np.testing.assert_array_equal(got[1]["h"][t], carried, err_msg=f"cache h at t={t}")


@DIRECTIONS
@DTYPE
def test_core_lengths_all_T_equal_no_lengths(core, variant, dtype, reverse, make_case):
    """Lengths that are all T change nothing: every output, cache field and gradient is bitwise
    the one of the call without lengths."""
    case = make_case(variant, 5, 16, 64, 64, dtype=dtype, reverse=reverse)
    full = dataclasses.replace(case, lengths=np.full(16, 5, dtype=np.int64))
    for got, want, what in zip(_run(core, full), _run(core, case), ("outputs", "cache", "grads")):
        _assert_all_equal(got, want, f"{variant.id} {what}")


@pytest.mark.parametrize("variant_id", ["lstm-coupled", "lstm-all"])
@DTYPE
def test_core_coupled_forget_gate_has_zero_gradients(core, variant_id, dtype, make_case):
    case = make_case(variant_id, 7, 3, 5, 9, dtype=dtype, ragged=True)
    H = 9
    _, _, grads = _run(core, case)
    for name in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
        np.testing.assert_array_equal(grads[name][H:2 * H], 0, err_msg=f"{name} f rows")
    if "dw_peep" in grads:
        np.testing.assert_array_equal(grads["dw_peep"][1], 0, err_msg="dw_peep p_f")


@pytest.mark.parametrize("x_scale", [4.0, 8.0])
@DTYPE
def test_core_matches_reference_with_saturated_gates(core, variant, dtype, x_scale, make_case,
                                                     assert_close):
    """Large inputs push most gates into saturation, where σ' and tanh' vanish."""
    case = make_case(variant, 9, 5, 11, 20, dtype=dtype, reverse=True, ragged=True,
                     x_scale=x_scale)
    _assert_runs_close(_run(core, case), _run(ref, case.astype(np.float64)), dtype,
                       f"{variant.id} x_scale={x_scale}", assert_close)
