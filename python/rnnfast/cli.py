"""The ``rnnfast`` command (also ``python -m rnnfast``)."""

from __future__ import annotations

import argparse
import sys

from .benchmark import add_bench_parser
from .demos import add_demo_parser


def _info(args: argparse.Namespace) -> int:
    import numpy as np

    import rnnfast

    info = rnnfast.build_info()
    rows = [
        ("rnnfast", rnnfast.__version__),
        ("threads", str(rnnfast.get_num_threads())),
        ("compiler", info["compiler"]),
        ("flags", info["flags"]),
        ("kernels", f"{info['module']} ({info['arch']}); builds present: {info['available']}"),
        ("SIMD", info["simd"]),
        ("Eigen", f"{info['eigen']} ({info['eigen_simd']})"),
        ("OpenMP", info["openmp"]),
        ("NumPy", np.__version__),
        ("Python", sys.version.split()[0]),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from .check import TOLERANCES, run_checks

    rows = run_checks(seed=args.seed)
    header = f"{'kernel':<44} {'dtype':<8} {'shape':<22} {'forward':>9} {'backward':>9}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.variant:<44} {r.dtype:<8} {r.shape:<22} {r.forward:9.1e} {r.backward:9.1e}  "
              f"{'ok' if r.ok else 'MISS'}")
    misses = sum(not r.ok for r in rows)
    tol = ", ".join(f"{d} {k} {v:.0e}" for (d, k), v in TOLERANCES.items())
    print(f"\nmax relative error vs the NumPy reference (both directions, full and ragged batches); "
          f"tolerances: {tol}")
    print(f"{len(rows) - misses} passed, {misses} failed")
    return 1 if misses else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnfast", description="Fast recurrent kernels for CPUs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="version, threads, compiler flags, SIMD level, Eigen version")
    p.set_defaults(func=_info)
    p = sub.add_parser("check", help="every kernel against the NumPy reference (exit 1 on a miss)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_check)
    add_bench_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
