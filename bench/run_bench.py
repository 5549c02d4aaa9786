#!/usr/bin/env python
"""Run the benchmark and print its CSV rows on stdout (the table and progress go to stderr).

    python bench/run_bench.py [rnnfast bench options] > after.csv
    python bench/run_bench.py --quick --cells lstm

A thin wrapper: the engine, its options and its grid are ``rnnfast.benchmark`` (``rnnfast bench``).
"""

import sys

from rnnfast.benchmark import main

if __name__ == "__main__":
    sys.exit(main(["--csv", "-", *sys.argv[1:]]))
