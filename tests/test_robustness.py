"""Robustness of the compiled kernels and the layers.

- NaN and Inf: a NaN in x[t, b] (or in row b of the initial state) makes row b's outputs NaN from
  that step on, in processing order, and leaves every other row and every earlier step bitwise
  as they were; a NaN at an inactive (padded) position changes nothing. Inf gives what IEEE
  arithmetic gives, as the reference computes it (saturated gates are finite).
- Requests too large to allocate raise MemoryError or ValueError instead of taking the process
  down (run in a child interpreter: the huge arrays are views of a one-element buffer).
- Concurrency: Python threads calling the kernels and the layers at once (the GIL is released in
  the kernels) get bitwise the results of a serial run; the thread count set applies to them too.
  A bidirectional layer's two directions, run side by side on two threads, give the results of
  running them one after the other, in forked children too.
- Determinism: outputs and gradients are bitwise identical across repeated runs, thread counts 1
  and 2, memory alignments and whatever ran before (reused workspaces), for every cell variant,
  forward and backward, full and ragged, and for bidirectional 2-layer layers.
- Layer files: save/load round trips exactly; corrupt, truncated and foreign files raise
  ValueError and never execute anything.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pathlib
import pickle
import resource
import threading
import time
import zipfile

import numpy as np
import pytest

import rnnfast
from rnnfast import _core, reference

from _child import announce, run_in_child

DTYPE = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
REVERSE = pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
RAGGED = pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
UNDER_ASAN = "libasan" in os.environ.get("LD_PRELOAD", "")

# Big enough that a step runs threaded: B * G*H * (P + I) multiply-adds per step is at least
# 16 * 97 * (97 + 33) = 201,760 for every variant, above the 96K of csrc/parallel.h (and
# test_big_shape_runs_threaded checks it); H = 97 leaves a partial tile of hidden units.
BIG = (7, 16, 33, 97)


@pytest.fixture
def keep_threads():
    """Restore the kernels' thread count after the test."""
    n = _core.get_num_threads()
    yield
    _core.set_num_threads(n)


def _run(case, module=_core):
    """Forward (training) and backward of ``case``: {"out:y": ..., "cache:h": ..., "grad:dx": ...}."""
    outputs, cache = case.forward(module)
    grads = case.backward(module, cache)
    return {**{f"out:{k}": v for k, v in outputs.items()},
            **{f"cache:{k}": v for k, v in cache.items()},
            **{f"grad:{k}": v for k, v in grads.items()}}


def _assert_identical(got, expected, what):
    assert got.keys() == expected.keys(), what
    for name, a in expected.items():
        assert got[name].dtype == a.dtype, f"{what}: {name} dtype"
        np.testing.assert_array_equal(got[name], a, err_msg=f"{what}: {name}", strict=True)


# ----------------------------------------------------------------------------------------------
# NaN and Inf.

def _processed_from(t, T, reverse):
    """The time steps processed at or after step t, in processing order: a boolean mask [T]."""
    steps = np.arange(T)
    return steps <= t if reverse else steps >= t


@pytest.mark.parametrize("where", ["x", "h0"])
@RAGGED
@REVERSE
@DTYPE
def test_nan_poisons_its_row_from_that_step_on(variant, dtype, reverse, ragged, where,
                                               make_case):
    T, B, t, b = 6, 4, 2, 1
    case = make_case(variant, T, B, 5, 7, dtype=dtype, reverse=reverse, ragged=ragged)
    if ragged:
        case.lengths[b] = 5  # row b active at t, inactive in its last step
    clean = case.forward(_core)
    poisoned_inputs = {k: None if v is None else v.copy() for k, v in case.inputs.items()}
    first = t if where == "x" else (T - 1 if reverse else 0)
    if where == "x":
        poisoned_inputs["x"][t, b, 0] = np.nan
    else:
        poisoned_inputs["h0"][b, 0] = np.nan
    if reverse and ragged:
        first = min(first, case.lengths[b] - 1)  # the reverse scan of row b starts there
    dirty = dataclasses.replace(case, inputs=poisoned_inputs).forward(_core)
    active = np.ones((T, B), bool) if case.lengths is None else (
        np.arange(T)[:, None] < case.lengths[None, :])
    nan_steps = _processed_from(first, T, reverse) & active[:, b]

    y, y_clean = dirty[0]["y"], clean[0]["y"]
    others = np.arange(B) != b
    np.testing.assert_array_equal(y[:, others], y_clean[:, others], strict=True,
                                  err_msg="other rows changed")
    assert np.isnan(y[nan_steps, b]).all(), "row b must be NaN from the poisoned step on"
    np.testing.assert_array_equal(y[~nan_steps, b], y_clean[~nan_steps, b], strict=True,
                                  err_msg="row b before the poisoned step (or padding) changed")
    for name in dirty[0]:
        if name != "y":  # final states: row b NaN, the others as they were
            assert np.isnan(dirty[0][name][b]).all(), name
            np.testing.assert_array_equal(dirty[0][name][others], clean[0][name][others],
                                          strict=True, err_msg=name)
    # The backward runs (no crash) and leaves rows b' != b of dx alone when nothing mixes rows
    # in the backward but the weight gradients: dx of other rows only depends on their own path.
    grads = dataclasses.replace(case, inputs=poisoned_inputs).backward(_core, dirty[1])
    clean_grads = case.backward(_core, clean[1])
    np.testing.assert_array_equal(grads["dx"][:, others], clean_grads["dx"][:, others],
                                  strict=True, err_msg="dx of other rows changed")


@DTYPE
def test_nan_in_padding_changes_nothing(variant, dtype, make_case):
    """x past a sequence's end is never read into a result, even when it is NaN."""
    case = make_case(variant, 6, 3, 4, 5, dtype=dtype, ragged=True)
    x = case.inputs["x"].copy()
    inactive = np.arange(6)[:, None] >= case.lengths[None, :]
    assert inactive.any()
    x[inactive] = np.nan
    expected = _run(case)
    got = _run(dataclasses.replace(case, inputs={**case.inputs, "x": x}))
    del got["grad:dw_ih"], expected["grad:dw_ih"]  # sum over (t, b) of dG^T x: 0 * NaN = NaN
    _assert_identical(got, expected, f"{variant.id} NaN padding")


def _assert_ieee_close(actual, expected, dtype, kind, name, assert_close):
    """Non-finite at the same positions; NaN and +-Inf there too (float64: see
    test_saturated_gates_are_exact for float32); the finite entries within tolerance."""
    np.testing.assert_array_equal(np.isfinite(actual), np.isfinite(expected),
                                  err_msg=f"{name}: finite")
    if dtype == np.float64:
        for what, test in (("NaN", np.isnan), ("+Inf", np.isposinf), ("-Inf", np.isneginf)):
            np.testing.assert_array_equal(test(actual), test(expected), err_msg=f"{name}: {what}")
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], dtype, kind, name)


@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["+inf", "-inf"])
@REVERSE
@DTYPE
def test_inf_in_x_is_what_ieee_arithmetic_gives(variant, dtype, reverse, value, make_case,
                                                assert_close):
    """+-Inf in x saturates the gates (sigmoid -> 0 or 1, tanh -> -1 or 1): finite states for
    LSTM, GRU and tanh RNN, Inf and then NaN for a ReLU RNN; the kernels agree with the
    reference (float64, same inputs) on where results are not finite and on the finite values.
    (In the backward a saturated gate has derivative 0, and 0 * Inf in dw_ih is NaN.)"""
    case = make_case(variant, 5, 3, 4, 6, dtype=dtype, reverse=reverse)
    x = case.inputs["x"].copy()
    x[2, 1, 0] = value
    case = dataclasses.replace(case, inputs={**case.inputs, "x": x})
    got = _run(case)
    with np.errstate(all="ignore"):
        expected = _run(case.astype(np.float64), reference)
    assert got.keys() == expected.keys()
    if variant.cell != "rnn" or variant.options["nonlinearity"] == "tanh":
        assert np.isfinite(got["out:y"]).all(), "saturated gates give finite outputs"
    for name, want in expected.items():
        kind = "backward" if name.startswith("grad:") else "forward"
        _assert_ieee_close(got[name], want, dtype, kind, f"{variant.id} {name}", assert_close)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@DTYPE
def test_saturated_gates_are_exact(cell, dtype, make_case):
    """sigmoid(-Inf) = 0, sigmoid(+Inf) = 1, tanh(+-Inf) = +-1 exactly, as IEEE arithmetic on
    1 / (1 + exp(-a)) gives and the reference computes; then a saturated gate's derivative
    y (1 - y) is exactly 0. (A gate of 3e-39 instead of 0 turns the NaN of 0 * Inf in dw_ih
    into +-Inf.)"""
    case = make_case(cell, 3, 2, 2, 8, dtype=dtype)
    x = case.inputs["x"].copy()
    x[1, 0, :] = [np.inf, 0.5]
    signs = np.where(np.arange(case.inputs["w_ih"].shape[0]) % 2 == 0, 1.0, -1.0)
    w_ih = np.stack([signs, np.zeros_like(signs)], axis=1).astype(dtype)  # +Inf, -Inf in turn
    case = dataclasses.replace(case, inputs={**case.inputs, "x": x, "w_ih": w_ih})
    gates = case.forward(_core)[1]["gates"][1, 0]
    with np.errstate(all="ignore"):
        expected = case.astype(np.float64).forward(reference)[1]["gates"][1, 0]
    assert set(np.unique(expected)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(gates, expected.astype(dtype), strict=True,
                                  err_msg="saturated gates")


# ----------------------------------------------------------------------------------------------
# Requests too large to allocate.

def test_output_too_large_to_allocate_raises_memory_error():
    """Real, small inputs (about 30 MB) whose training cache would need 16 TB: an LSTM with
    a projection to P = 1 has w_hh [4H, 1], so nothing in the input is quadratic in H."""
    T, H = 2**20, 2**20
    x = np.zeros((T, 1, 1), np.float32)
    h0 = np.zeros((1, 1), np.float32)
    c0 = np.zeros((1, H), np.float32)
    w_ih = np.zeros((4 * H, 1), np.float32)
    w_hh = np.zeros((4 * H, 1), np.float32)
    w_hr = np.zeros((1, H), np.float32)
    with pytest.raises((MemoryError, ValueError)):
        _core.lstm_forward(x, h0, c0, w_ih, w_hh, w_hr=w_hr, training=True)


def _phantom(shape, dtype=np.float64):
    """A C-contiguous array of any size over one real element: fine as long as nothing reads
    it. Every size check and every output allocation of a kernel call happens before the kernel
    reads its inputs (csrc/bind: validate, allocate, then compute), so these reach only those."""
    one = np.zeros(1, dtype)
    strides = []
    step = one.itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    a = np.lib.stride_tricks.as_strided(one, shape=shape, strides=tuple(reversed(strides)))
    assert a.flags.c_contiguous
    return a


def allocation_cases():
    """Run in a child: name -> the exception's name ('none' when the call returned)."""
    small = np.zeros((1, 1))
    cases = {
        # T*B*G*H does not fit a 64-bit index.
        "lstm T*B*4H overflows": lambda: _core.lstm_forward(
            _phantom((2**20, 1, 1)), small, _phantom((1, 2**45)), _phantom((4 * 2**45, 1)),
            _phantom((4 * 2**45, 1)), w_hr=_phantom((1, 2**45))),
        "gru T*B*3H overflows": lambda: _core.gru_forward(
            _phantom((2**40, 1, 1)), _phantom((1, 2**28)), _phantom((3 * 2**28, 1)),
            _phantom((3 * 2**28, 2**28), np.float64)),
        "rnn T*B*H overflows": lambda: _core.rnn_forward(
            _phantom((2**40, 1, 1)), _phantom((1, 2**28)), _phantom((2**28, 1)),
            _phantom((2**28, 2**28))),
        # It fits, but the outputs need 256 TB, more than any address space.
        "lstm c_n of 2**48 bytes": lambda: _core.lstm_forward(
            _phantom((2**10, 1, 1)), small, _phantom((1, 2**45)), _phantom((4 * 2**45, 1)),
            _phantom((4 * 2**45, 1)), w_hr=_phantom((1, 2**45))),
        "gru y of 2**48 bytes": lambda: _core.gru_forward(
            _phantom((2**18, 1, 1), np.float32), _phantom((1, 2**28), np.float32),
            _phantom((3 * 2**28, 1), np.float32), _phantom((3 * 2**28, 2**28), np.float32)),
        "rnn y of 2**48 bytes": lambda: _core.rnn_forward(
            _phantom((2**18, 1, 1), np.float32), _phantom((1, 2**28), np.float32),
            _phantom((2**28, 1), np.float32), _phantom((2**28, 2**28), np.float32)),
        "rnn cell of 2**48 bytes": lambda: rnnfast.rnn_cell(
            _phantom((2**18, 1), np.float32), _phantom((2**18, 2**28), np.float32),
            _phantom((2**28, 1), np.float32), _phantom((2**28, 2**28), np.float32)),
    }
    outcomes = {}
    for name, call in cases.items():
        announce(name)
        try:
            call()
            outcomes[name] = "none"
        except Exception as err:  # noqa: BLE001 - the outcome is the exception's type
            outcomes[name] = type(err).__name__
    return outcomes


def test_impossible_sizes_raise_instead_of_crashing():
    outcomes = run_in_child("test_robustness", "allocation_cases")
    wrong = {k: v for k, v in outcomes.items() if v not in ("MemoryError", "ValueError")}
    assert not wrong, f"expected MemoryError or ValueError: {wrong}"


def test_layer_too_large_to_allocate_raises_memory_error():
    with pytest.raises((MemoryError, ValueError)):
        rnnfast.GRU(2**20, 2**20)


# ----------------------------------------------------------------------------------------------
# Concurrency.

def _threaded(jobs, n_threads=6, rounds=2):
    """Run every job (a function of no arguments) in each of ``n_threads`` threads, each thread
    in its own order, all starting together; return [(job index, result)] of every run."""
    barrier = threading.Barrier(n_threads)
    results, errors = [], []
    lock = threading.Lock()

    def worker(k):
        order = np.random.default_rng(k).permutation(len(jobs))
        try:
            barrier.wait()
            for _ in range(rounds):
                for j in order:
                    r = jobs[j]()
                    with lock:
                        results.append((j, r))
        except BaseException as err:  # noqa: BLE001 - reported in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == n_threads * rounds * len(jobs)
    return results


@DTYPE
def test_threads_calling_kernels_at_once_get_serial_results(dtype, make_case, keep_threads):
    """Every variant, some threaded inside (big), some not (small), from 6 threads at once."""
    _core.set_num_threads(2)
    cases = [make_case(v, *shape, dtype=dtype, ragged=ragged, reverse=ragged)
             for v in ("lstm-all", "lstm", "gru", "gru-lbr0", "rnn-tanh", "rnn-relu")
             for shape, ragged in ((BIG, True), ((5, 3, 4, 6), False))]
    jobs = [lambda c=c: _run(c) for c in cases]
    serial = [job() for job in jobs]
    for j, result in _threaded(jobs):
        _assert_identical(result, serial[j], f"job {j} ({cases[j].variant.id})")


def _layers(dtype=np.float64):
    """A bidirectional 2-layer layer of each kind, with some of its options."""
    return [rnnfast.LSTM(33, 97, num_layers=2, bidirectional=True, proj_size=40, peephole=True,
                         dtype=dtype, seed=1),
            rnnfast.GRU(33, 97, num_layers=2, bidirectional=True, linear_before_reset=False,
                        dtype=dtype, seed=2),
            rnnfast.RNN(33, 97, num_layers=2, bidirectional=True, nonlinearity="relu",
                        merge_mode="sum", dtype=dtype, seed=3)]


def _flat(result):
    """(output, state) -> [output, h] or [output, h, c]."""
    y, state = result
    return [y, *(state if isinstance(state, tuple) else (state,))]


def _layer_inputs(seed, B=16, T=7):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (T, B, 33)), rng.integers(1, T + 1, B)


def test_threads_sharing_layers_in_eval_mode_get_serial_results():
    """Inference (eval mode) reads a layer only: threads may share it."""
    layers = [layer.eval() for layer in _layers()]
    inputs = [_layer_inputs(seed) for seed in range(3)]
    jobs = [lambda layer=layer, x=x, n=n: _flat(layer(x, lengths=n))
            for layer in layers for x, n in inputs]
    serial = [job() for job in jobs]
    for j, result in _threaded(jobs):
        for got, want in zip(result, serial[j]):
            np.testing.assert_array_equal(got, want, strict=True, err_msg=f"job {j}")


def _train_step(layer, x, lengths, seed):
    """Forward, backward with a seeded output gradient: (output, dx, every parameter gradient)."""
    layer.zero_grad()
    y, _ = layer(x, lengths=lengths)
    dx, _ = layer.backward(np.random.default_rng(seed).standard_normal(y.shape))
    return {"y": y, "dx": dx, **{f"d{k}": g.copy() for k, g in layer.grads.items()}}


def test_threads_each_training_its_own_layer_get_serial_results():
    """Training changes a layer (saved forward, gradients): one layer per thread."""
    x, lengths = _layer_inputs(7)
    serial = [_train_step(layer, x, lengths, 0) for layer in _layers()]
    barrier = threading.Barrier(6)
    results, errors = [None] * 6, []

    def worker(k):
        try:
            layer = _layers()[k % 3]
            barrier.wait()
            for _ in range(2):
                results[k] = _train_step(layer, x, lengths, 0)
        except BaseException as err:  # noqa: BLE001 - reported in the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for k, result in enumerate(results):
        _assert_identical(result, serial[k % 3], f"thread {k}")


def test_thread_count_set_applies_in_every_thread(keep_threads):
    """rnnfast.set_num_threads sets the number of threads "the kernels use", for kernels called
    from any Python thread (a thread pool, a server), not only from the thread that set it."""
    seen = {}
    for n in (1, 2):
        rnnfast.set_num_threads(n)
        t = threading.Thread(target=lambda n=n: seen.__setitem__(n, rnnfast.get_num_threads()))
        t.start()
        t.join()
    assert seen == {1: 1, 2: 2}, f"set in the main thread -> seen in another thread: {seen}"


def test_local_thread_count_applies_to_the_calling_thread_only(keep_threads):
    """_core.set_local_threads (the layers' side-by-side directions use it) overrides the count
    for calls from the thread that set it, returns the previous setting, and 0 undoes it."""
    rnnfast.set_num_threads(2)
    assert _core.set_local_threads(1) == 0
    try:
        assert rnnfast.get_num_threads() == 1
        seen = []
        t = threading.Thread(target=lambda: seen.append(rnnfast.get_num_threads()))
        t.start()
        t.join()
        assert seen == [2], "a local count leaked into another thread"
        assert _core.set_local_threads(3) == 1
        assert rnnfast.get_num_threads() == 3
    finally:
        assert _core.set_local_threads(0) == 3
    assert rnnfast.get_num_threads() == 2
    limit = 4 * os.cpu_count()
    for bad in (-1, limit + 1):
        with pytest.raises(ValueError, match=rf"n: expected 0 \(none\) or a thread count in "
                                             rf"\[1, \d+\], got {bad}"):
            _core.set_local_threads(bad)
    assert rnnfast.get_num_threads() == 2


def test_multithreaded_calls_measure_how_far_apart_their_cores_are(keep_threads, make_case):
    """A call on two threads measures the round trip of a cache line between their cores (at most
    every 20 ms; csrc/parallel.h, CoreDistance), from which the kernels choose one thread for small
    steps when the cores are far apart. Without two processors there is nothing to measure."""
    rnnfast.set_num_threads(2)
    case = make_case("lstm", 2, 16, 64, 256, dtype=np.float32)  # big enough for two threads
    case.forward(_core, training=False)
    time.sleep(0.03)  # past the interval: this call measures anew
    case.forward(_core, training=False)
    if len(os.sched_getaffinity(0)) >= 2:
        assert 0 < _core.core_round_trip_ns() < 1_000_000
    else:
        assert _core.core_round_trip_ns() == 0


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@DTYPE
def test_directions_side_by_side_give_the_serial_results(dtype, ragged, threads, keep_threads,
                                                         monkeypatch):
    """A bidirectional layer runs its two directions on two Python threads, each on half the
    kernels' threads, when they are big enough: outputs, states, dx and every gradient are
    bitwise those of running them one after the other. The threshold is forced both ways."""
    from rnnfast import layers as layers_module
    x, lengths = _layer_inputs(4)
    lengths = lengths if ragged else None
    _core.set_num_threads(threads)
    submitted = []
    real_submit = layers_module._side_thread.submit
    monkeypatch.setattr(layers_module._side_thread, "submit",
                        lambda f: submitted.append(1) or real_submit(f))
    for k in range(3):
        results = {}
        for name, work in (("one after the other", float("inf")), ("side by side", 0.0)):
            monkeypatch.setattr(layers_module, "_SIDE_BY_SIDE_WORK", work)
            layer = _layers(dtype)[k]
            before = len(submitted)
            results[name] = _train_step(layer, x.astype(dtype), lengths, 5)
            results[name].update({f"state{j}": s for j, s in enumerate(_flat(
                layer.eval()(x.astype(dtype), lengths=lengths)))})
            # 2 layers, forward and backward, and 2 more forwards in eval mode
            assert len(submitted) - before == (0 if work else 6), name
            assert rnnfast.get_num_threads() == threads, "the local thread count was not undone"
        _assert_identical(results["side by side"], results["one after the other"],
                          f"{type(layer).__name__}, {threads} threads")


def test_an_error_in_the_side_direction_reaches_the_caller(keep_threads, monkeypatch):
    """An exception raised on the second thread is raised by the layer's call, and both threads'
    local thread counts are undone."""
    from rnnfast import layers as layers_module
    monkeypatch.setattr(layers_module, "_SIDE_BY_SIDE_WORK", 0.0)
    _core.set_num_threads(2)
    layer = rnnfast.GRU(4, 8, bidirectional=True)
    real = layer._kind.forward
    seen = []

    def failing(k, x, s0, p, reverse, lengths, training):
        seen.append((reverse, rnnfast.get_num_threads()))
        if reverse:
            raise RuntimeError("the reverse direction failed")
        return real(k, x, s0, p, reverse, lengths, training)

    monkeypatch.setattr(layer._kind, "forward", failing)
    with pytest.raises(RuntimeError, match="the reverse direction failed"):
        layer(np.zeros((3, 2, 4)))
    assert sorted(seen) == [(False, 1), (True, 1)]
    assert rnnfast.get_num_threads() == 2
    after = layers_module._side_thread.submit(rnnfast.get_num_threads).result()
    assert after == 2, "the side thread kept its local thread count"


def test_directions_side_by_side_during_interpreter_shutdown():
    """At exit no new thread may start (concurrent.futures refuses): a layer called from an atexit
    handler runs its directions one after the other instead of failing."""
    import subprocess
    import sys
    code = ("import atexit, numpy as np, rnnfast, rnnfast.layers as L\n"
            "L._SIDE_BY_SIDE_WORK = 0.0\n"
            "rnnfast.set_num_threads(2)\n"
            "layer = rnnfast.GRU(4, 8, bidirectional=True).eval()\n"
            "x = np.ones((3, 2, 4))\n"
            "y = layer(x)[0]\n"
            "atexit.register(lambda: print('same at exit:', np.array_equal(layer(x)[0], y)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "same at exit: True" in done.stdout, done.stdout + done.stderr


def side_by_side_after_fork():
    """Run in a child: a bidirectional layer side by side, then again in a forked grandchild
    (the side thread of the parent does not exist there); the grandchild's output must equal
    the parent's."""
    import rnnfast.layers as layers_module
    layers_module._SIDE_BY_SIDE_WORK = 0.0
    _core.set_num_threads(2)
    layer = rnnfast.LSTM(4, 8, bidirectional=True).eval()
    x = np.linspace(-1, 1, 3 * 2 * 4).reshape(3, 2, 4)
    y = layer(x)[0]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the grandchild
        try:
            os.write(write, layer(x)[0].tobytes())
        finally:
            os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    return bool(np.array_equal(np.frombuffer(data, y.dtype).reshape(y.shape), y))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_directions_side_by_side_work_in_a_forked_child():
    assert run_in_child("test_robustness", "side_by_side_after_fork", timeout=120) is True


def too_many_threads():
    """Run in a child whose address space is capped (so that thread stacks run out): ask for
    5000 threads, then run a kernel that is big enough to use them all."""
    announce("set_num_threads(5000)")
    try:
        _core.set_num_threads(5000)
    except ValueError:
        return "refused"
    x = np.zeros((2, 16, 64), np.float32)
    h = np.zeros((16, 64), np.float32)
    w = np.zeros((256, 64), np.float32)
    announce("lstm_forward on 5000 threads")
    try:
        _core.lstm_forward(x, h, h, w, w)
    except (RuntimeError, MemoryError, ValueError) as err:
        return type(err).__name__
    return "ran"


def _cap_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's shadow memory needs an uncapped address space")
def test_more_threads_than_the_system_gives_is_not_fatal():
    """libgomp ends the process (exit status 1, "Thread creation failed") when it cannot start a
    team's threads: a thread count that cannot be honoured must be refused (ValueError) or the
    call must fail with an exception, never end the interpreter."""
    run_in_child("test_robustness", "too_many_threads", preexec_fn=_cap_address_space)


# ----------------------------------------------------------------------------------------------
# Determinism.

def threads_used():
    """Run in a child: how many OS threads the process has after one BIG call on 2 threads."""
    _core.set_num_threads(2)
    rng = np.random.default_rng(0)
    T, B, I, H = BIG
    x, h = rng.standard_normal((T, B, I)), np.zeros((B, H))
    _core.rnn_forward(x, h, rng.standard_normal((H, I)), rng.standard_normal((H, H)))
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_big_shape_runs_threaded():
    """The determinism tests below compare 1 and 2 threads on BIG: make sure 2 are used."""
    assert run_in_child("test_robustness", "threads_used") >= 2


def _offset_copy(case, offset):
    """``case`` with every array copied to ``offset`` bytes past a 64-byte boundary."""
    def move(a):
        if a is None:
            return None
        raw = np.zeros(a.nbytes + 128, np.uint8)
        start = (-raw.ctypes.data) % 64 + offset
        out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
        out[...] = a
        return out
    return dataclasses.replace(case, inputs={k: move(v) for k, v in case.inputs.items()},
                               output_grads={k: move(v) for k, v in case.output_grads.items()})


def _garbage_call(case):
    """A call of ``case``'s shapes on NaN inputs: it leaves NaN in the workspaces that the next
    calls of this thread reuse (csrc/workspace.h)."""
    nan = {k: None if v is None else np.full_like(v, np.nan) for k, v in case.inputs.items()}
    _run(dataclasses.replace(case, inputs=nan))


@RAGGED
@REVERSE
@DTYPE
def test_results_are_bitwise_reproducible(variant, dtype, reverse, ragged, make_case,
                                          keep_threads):
    """Repeated runs, 1 and 2 threads, other memory alignments, after garbage in the reused
    workspaces: forward, cache and backward all bitwise identical."""
    case = make_case(variant, *BIG, dtype=dtype, reverse=reverse, ragged=ragged, x_scale=2.0)
    _core.set_num_threads(1)
    expected = _run(case)
    runs = {"1 thread again": lambda: _run(case)}
    runs["after NaN garbage"] = lambda: (_garbage_call(case), _run(case))[1]
    for offset in (8, 24, 40):
        runs[f"arrays {offset} bytes past 64"] = lambda o=offset: _run(_offset_copy(case, o))
    for what, run in runs.items():
        _assert_identical(run(), expected, f"{variant.id} {what}")
    _core.set_num_threads(2)
    for what, run in runs.items():
        _assert_identical(run(), expected, f"{variant.id} 2 threads, {what}")


@pytest.mark.parametrize("ragged", [False, True], ids=["full", "ragged"])
@DTYPE
def test_layer_results_are_bitwise_reproducible(dtype, ragged, keep_threads):
    """Bidirectional 2-layer layers of each kind: outputs, dx and every parameter gradient."""
    x, lengths = _layer_inputs(3)
    lengths = lengths if ragged else None
    for k in range(3):
        results = []
        for n in (1, 2, 1, 2):
            _core.set_num_threads(n)
            layer = _layers(dtype)[k]
            results.append(_train_step(layer, x.astype(dtype), lengths, 5))
        for run, result in enumerate(results[1:], start=2):
            _assert_identical(result, results[0], f"{type(layer).__name__} run {run}")


# ----------------------------------------------------------------------------------------------
# Layer files.

ROUND_TRIP = [
    (rnnfast.LSTM, {"input_size": 3, "hidden_size": 5, "num_layers": 2, "bidirectional": True,
                    "proj_size": 2, "peephole": True, "coupled": True, "dtype": np.float32}),
    (rnnfast.GRU, {"input_size": 3, "hidden_size": 5, "num_layers": 2, "bidirectional": True,
                   "linear_before_reset": False, "batch_first": True, "dtype": np.float64}),
    (rnnfast.RNN, {"input_size": 3, "hidden_size": 5, "nonlinearity": "relu",
                   "bidirectional": True, "merge_mode": "ave", "dropout": 0.25, "num_layers": 2,
                   "dtype": np.float64}),
]


@pytest.mark.parametrize(("cls", "options"), ROUND_TRIP, ids=[c.__name__ for c, _ in ROUND_TRIP])
def test_save_load_round_trip_is_exact(cls, options, tmp_path):
    layer = cls(**options, seed=11)
    path = tmp_path / "layer.npz"
    layer.save(path)
    for backend in ("core", "reference"):
        loaded = cls.load(path, backend=backend)
        assert type(loaded) is cls and loaded.backend == backend
        assert loaded.config == layer.config
        _assert_identical(loaded.state_dict(), layer.state_dict(), "parameters")
    loaded = cls.load(str(path)).eval()  # a str path too
    x = np.random.default_rng(0).uniform(-1, 1, (4, 4, 3))
    for got, want in zip(_flat(loaded(x, lengths=[4, 2, 3, 1])),
                         _flat(layer.eval()(x, lengths=[4, 2, 3, 1]))):
        np.testing.assert_array_equal(got, want, strict=True)


def _good_file(tmp_path, cls=rnnfast.LSTM, **options):
    path = tmp_path / f"{cls.__name__}.npz"
    cls(3, 4, **options, seed=0).save(path)
    return path


def _rewrite(src, dst, change):
    """Copy the archive at ``src`` to ``dst`` with its arrays passed through ``change(dict)``."""
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays = change(arrays)
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


def _with_config(**changes):
    def change(arrays):
        config = json.loads(str(arrays["__config__"]))
        config.update(changes)
        return {**arrays, "__config__": np.array(json.dumps(config))}
    return change


class _Touch:
    """Unpickling this creates ``path``: the marker of code run while loading."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


FOREIGN = {
    "empty file": lambda good, path, marker: path.write_bytes(b""),
    "text file": lambda good, path, marker: path.write_text("hidden_size = 4\n"),
    "a .npy array": lambda good, path, marker: path.write_bytes(_npy_bytes(np.zeros(3))),
    "an npz without a format tag": lambda good, path, marker: _rewrite(
        good, path, lambda a: {k: v for k, v in a.items() if k != "__format__"}),
    "an npz of another program": lambda good, path, marker: _zip(
        path, {"weights.npy": _npy_bytes(np.zeros((4, 3)))}),
    "a GRU file": lambda good, path, marker: rnnfast.GRU(3, 4, seed=0).save(path),
    "another format version": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "__version__": np.array(2)}),
    "no version": lambda good, path, marker: _rewrite(
        good, path, lambda a: {k: v for k, v in a.items() if k != "__version__"}),
    "configuration not JSON": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "__config__": np.array("{hidden_size: 4")}),
    "configuration a list": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "__config__": np.array("[4, 3]")}),
    "configuration with an unknown key": lambda good, path, marker: _rewrite(
        good, path, _with_config(activation="gelu")),
    "configuration with a bad value": lambda good, path, marker: _rewrite(
        good, path, _with_config(merge_mode="max")),
    "configuration with a bad dtype": lambda good, path, marker: _rewrite(
        good, path, _with_config(dtype="float16")),
    "configuration with an object dtype": lambda good, path, marker: _rewrite(
        good, path, _with_config(dtype="O")),
    "configuration disagreeing with the parameters": lambda good, path, marker: _rewrite(
        good, path, _with_config(hidden_size=5)),
    "a huge hidden size": lambda good, path, marker: _rewrite(
        good, path, _with_config(hidden_size=2**40)),
    "a parameter missing": lambda good, path, marker: _rewrite(
        good, path, lambda a: {k: v for k, v in a.items() if k != "param/weight_hh_l0"}),
    "a parameter too many": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "param/weight_hh_l1": np.zeros((16, 4))}),
    "a parameter of the wrong shape": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "param/weight_hh_l0": np.zeros((16, 3))}),
    "integer parameters": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "param/weight_hh_l0": np.zeros((16, 4), np.int64)}),
    "a pickle": lambda good, path, marker: path.write_bytes(pickle.dumps(_Touch(marker))),
    "an npz holding a pickled object": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "param/weight_hh_l0": np.array([_Touch(marker)])}),
    "a pickled format tag": lambda good, path, marker: _rewrite(
        good, path, lambda a: {**a, "__format__": np.array([_Touch(marker)])}),
    "a zip of a pickle": lambda good, path, marker: _zip(path, {
        "__format__.npy": _npy_bytes(np.array("LSTM")), "evil.pkl": pickle.dumps(_Touch(marker))}),
}


def _npy_bytes(a):
    f = io.BytesIO()
    np.save(f, a)
    return f.getvalue()


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_the_marker_pickle_would_run_code(tmp_path):
    """The control for the tests below: unpickling a _Touch does create its marker."""
    marker = tmp_path / "code-ran"
    pickle.loads(pickle.dumps(_Touch(marker)))
    assert marker.exists()


@pytest.mark.parametrize("make", list(FOREIGN.values()), ids=list(FOREIGN))
def test_foreign_file_is_a_clear_value_error_and_runs_nothing(make, tmp_path):
    good = _good_file(tmp_path)
    path, marker = tmp_path / "file.npz", tmp_path / "code-ran"
    make(good, path, marker)
    with pytest.raises(ValueError, match=r"file\.npz"):
        rnnfast.LSTM.load(path)
    assert not marker.exists(), "loading the file ran code from it"


def test_truncated_file_is_a_clear_value_error(tmp_path):
    data = _good_file(tmp_path).read_bytes()
    path = tmp_path / "cut.npz"
    for size in sorted({0, 1, 4, 30, len(data) // 3, len(data) // 2, len(data) - 22,
                        len(data) - 1}):
        path.write_bytes(data[:size])
        with pytest.raises(ValueError, match=r"cut\.npz"):
            rnnfast.LSTM.load(path)


def test_every_corrupted_byte_is_a_value_error_or_harmless(tmp_path):
    """Flip each byte of a small model file in turn: loading raises ValueError, or (a byte that
    does not matter, e.g. a time stamp) gives the original layer exactly."""
    good = _good_file(tmp_path, rnnfast.RNN)
    data = good.read_bytes()
    original = rnnfast.RNN.load(good).state_dict()
    path = tmp_path / "flipped.npz"
    unexpected = {}
    for k in range(len(data)):
        path.write_bytes(data[:k] + bytes([data[k] ^ 0xFF]) + data[k + 1:])
        try:
            loaded = rnnfast.RNN.load(path).state_dict()
        except ValueError:
            continue
        except Exception as err:  # noqa: BLE001 - collected and reported below
            unexpected[k] = f"{type(err).__name__}: {err}"
            continue
        if loaded.keys() != original.keys() or any(
                not np.array_equal(loaded[n], original[n]) for n in original):
            unexpected[k] = "loaded different parameters"
    assert not unexpected, f"{len(unexpected)} of {len(data)} bytes: " + "; ".join(
        f"byte {k}: {v}" for k, v in list(unexpected.items())[:5])
