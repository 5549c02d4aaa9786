"""Options of the pytest-benchmark micro-benchmarks (``pytest bench/``)."""


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true",
                     help="rnnfast micro-benchmarks on the tiny --quick grid (a smoke test)")
