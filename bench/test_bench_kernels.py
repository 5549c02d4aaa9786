"""pytest-benchmark micro-benchmarks of rnnfast, torch and ONNX Runtime on the benchmark grid.

    pytest bench/                                # the grid of rnnfast.benchmark, all cores
    pytest bench/ --quick                        # tiny shapes: does it run?
    pytest bench/ -k "lstm and forward" --benchmark-columns=median,iqr,rounds

Never part of the test suite: ``python -m pytest`` collects ``tests/`` only (``testpaths`` in
pyproject.toml). Cases, weights, contenders and the check against the NumPy reference are those of
``rnnfast bench`` (rnnfast.benchmark): a contender that disagrees with the reference fails here
instead of being timed. Results are grouped by case and mode, so each group reads as one row of
the ``rnnfast bench`` table; that command's interleaved runs are the fairer comparison on a busy
machine, these are for pytest-benchmark's statistics and its --benchmark-compare.
"""

import pytest

pytest.importorskip("pytest_benchmark")

from rnnfast import benchmark as rb  # noqa: E402

COMPETITORS = ("torch", "onnxruntime")  # the NumPy reference is too slow to micro-benchmark


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = rb.grid(quick=metafunc.config.getoption("--quick"))
        metafunc.parametrize("case", cases, ids=[c.label.replace(" ", "-") for c in cases],
                             scope="module", indirect=True)


@pytest.fixture(scope="module")
def settings():
    return rb.Settings(threads=rb.available_cores(), against=COMPETITORS)


@pytest.fixture(scope="module", autouse=True)
def same_threads(settings):
    """Every library on all cores, as ``rnnfast bench`` runs them by default."""
    with rb.thread_limits(settings.threads, with_torch=rb.missing_module("torch") is None):
        yield


@pytest.fixture(scope="module")
def case(request):
    return request.param


@pytest.fixture(scope="module")
def verified(case, settings, same_threads):
    """{(mode, contender): Result}: every contender built and checked against the reference."""
    return {(r.mode, r.contender): r for r in rb.prepare_case(case, settings)}


@pytest.mark.parametrize("contender", ("rnnfast", *COMPETITORS))
@pytest.mark.parametrize("mode", ("forward", "train"))
def test_kernel(benchmark, case, verified, mode, contender):
    result = verified.get((mode, contender))
    if result is None:
        pytest.skip(f"{case.label} has no {mode} mode")
    if result.status in (rb.WRONG, rb.FAILED):
        pytest.fail(f"{case.label} {mode} {contender}: {result.status}: {result.note}")
    if result.status != rb.OK:
        pytest.skip(f"{contender}: {result.status}: {result.note}")
    benchmark.group = f"{case.label} {mode}"
    benchmark.extra_info["gflops_per_call"] = case.flops(mode) / 1e9
    benchmark(result.fn)
