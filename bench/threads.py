"""One thread against all of them: the forward of rnnfast, torch and ONNX Runtime on one thread and
on N, interleaved run by run, so that a gap between the libraries can be told apart into what one
core does (the kernels) and what the threads add (their split of the work, their barriers).

    python bench/threads.py [--cells lstm,gru] [--shapes B,T,H ...] [--threads N] [--repeats R]
                            [--markdown]

Every contender is the one ``rnnfast bench`` times (``rnnfast.benchmark``), with the same weights;
each one's output is checked against the float64 NumPy reference before anything is timed. The
runs go round all (library, threads) pairs, in reverse order every other round, with the pause of
``rnnfast bench`` between two runs. Reported: median ms, GFLOP/s (the GEMM flops of the call), the
speed-up of N threads over one, and rnnfast's speed-up over each library at equal threads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any, Callable

import rnnfast
from rnnfast import benchmark as bm

DEFAULT_SHAPES = ((16, 100, 256), (64, 50, 512))
# The libraries timed: rnnfast, and each competitor that imports here.
LIBRARIES = ("rnnfast",) + tuple(n for n in ("torch", "onnxruntime")
                                 if bm.missing_module(n) is None)


def contenders(case: bm.Case, threads: int) -> dict[tuple[str, int], Callable[[], Any]]:
    """(library, thread count) -> its forward, for the libraries that are importable."""
    problem = bm.make_problem(case)
    expected = bm.judge(case, problem).forward()
    out = {}
    for name in LIBRARIES:
        for n in sorted({1, threads}):
            contender = bm.build_contender(name, case, problem, n)
            result = bm.verify(contender, "forward", expected, case)
            if result.status != bm.OK:
                raise RuntimeError(f"{name} ({n} threads): {result.note}")
            out[(name, n)] = result.fn
    return out


def set_threads(n: int) -> None:
    rnnfast.set_num_threads(n)
    if "torch" in LIBRARIES:
        import torch

        torch.set_num_threads(n)


def measure(case: bm.Case, threads: int, repeats: int) -> dict[tuple[str, int], float]:
    """Median seconds per forward of every (library, threads)."""
    fns = contenders(case, threads)
    times: dict[tuple[str, int], list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for k in keys:  # warm-up
        set_threads(k[1])
        fns[k]()
    for r in range(repeats):
        for k in keys if r % 2 == 0 else keys[::-1]:
            set_threads(k[1])
            bm._settle()
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def rows(case: bm.Case, threads: int, med: dict[tuple[str, int], float]) -> list[list[str]]:
    flops = case.flops("forward")
    out = []
    for name in LIBRARIES:
        t1, tn = med[(name, 1)], med[(name, threads)]
        vs1 = "-" if name == "rnnfast" else f"{t1 / med[('rnnfast', 1)]:.2f}x"
        vsn = "-" if name == "rnnfast" else f"{tn / med[('rnnfast', threads)]:.2f}x"
        out.append([case.label, bm.DISPLAY[name], f"{t1 * 1e3:.3g}", f"{flops / t1 / 1e9:.1f}",
                    f"{tn * 1e3:.3g}", f"{flops / tn / 1e9:.1f}", f"{t1 / tn:.2f}", vs1, vsn])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--shapes", nargs="+", type=bm.parse_shape, default=None, metavar="B,T,H")
    p.add_argument("--threads", type=int, default=bm.available_cores())
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = p.parse_args(argv)
    if args.threads < 2:
        p.error(f"--threads: expected at least 2 (one thread is always measured), "
                f"got {args.threads}")
    if args.repeats < 1:
        p.error(f"--repeats: expected at least 1, got {args.repeats}")
    shapes = args.shapes or [(B, T, H, H) for B, T, H in DEFAULT_SHAPES]
    cells = [c for c in args.cells.split(",") if c]
    for c in cells:
        if c not in bm.CELLS:
            p.error(f"--cells: expected names from {list(bm.CELLS)}, got {c!r}")
    n = args.threads
    header = ["case", "library", "1 thread ms", "GFLOP/s", f"{n} threads ms", "GFLOP/s",
              f"{n} threads / 1", "its time / rnnfast's, 1 thread", f"at {n} threads"]
    table = []
    for cell in cells:
        for B, T, I, H in shapes:
            case = bm.Case("sequence", cell, B, T, I, H)
            new = rows(case, n, measure(case, n, args.repeats))
            table += new
            if not args.markdown:
                for row in new:
                    print("  ".join(row), flush=True)
    if args.markdown:
        print(f"`python bench/threads.py --markdown`, float32, forward, median of {args.repeats} "
              f"interleaved runs:\n")
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join([":---", ":---"] + ["---:"] * (len(header) - 2)) + "|")
        for row in table:
            print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
