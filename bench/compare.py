#!/usr/bin/env python
"""Compare two CSV files of ``rnnfast bench`` (e.g. before and after an optimisation).

    python bench/compare.py before.csv after.csv [--contender rnnfast]

For every (case, mode, contender) timed in both files: the median ms before and after and the
speed-up after/before (before ms / after ms: above 1 means faster now). Then the geometric mean of
the speed-ups per contender. The ``sgemm`` row shows how much the machine itself moved between the
two runs: a competitor's ratio far from 1 means the machine changed, not the code, so compare the
rnnfast ratios with it.
"""

from __future__ import annotations

import argparse
import sys

from rnnfast.benchmark import geomean, read_csv


def timed(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], float]:
    """(case, mode, contender) -> median ms, for the rows that were timed."""
    return {(r["case"], r["mode"], r["contender"]): float(r["median_ms"])
            for r in rows if r["status"] == "ok" and r["median_ms"]}


def compare(before: dict, after: dict, contenders: set[str] | None) -> tuple[list[list[str]], dict]:
    """Table rows and {contender: [speed-ups]} over the keys present in both."""
    rows, ratios = [], {}
    for key in [k for k in before if k in after]:
        case, mode, contender = key
        if contenders and contender not in contenders and contender != "numpy":
            continue
        ratio = before[key] / after[key]
        ratios.setdefault(contender, []).append(ratio)
        rows.append([case, mode, contender, f"{before[key]:.4g}", f"{after[key]:.4g}",
                     f"{ratio:.3f}x"])
    return rows, ratios


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--contender", action="append",
                   help="only this contender (repeatable; default: all)")
    args = p.parse_args(argv)
    before, after = timed(read_csv(args.before)), timed(read_csv(args.after))
    rows, ratios = compare(before, after, set(args.contender or ()))
    if not rows:
        print("compare: no row was timed in both files", file=sys.stderr)
        return 1
    header = ["case", "mode", "contender", "before ms", "after ms", "speed-up"]
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(c.ljust(w) if k < 3 else c.rjust(w)
                        for k, (c, w) in enumerate(zip(r, widths))))
    print()
    for contender, values in ratios.items():
        print(f"geometric mean speed-up after/before, {contender}: {geomean(values):.3f}x over "
              f"{len(values)} rows")
    only = sorted(set(before) ^ set(after))
    if only:
        print(f"{len(only)} row(s) timed in only one of the files (not compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
