"""Variable-length batches: what a batch with per-sequence lengths costs against the same batch
padded to its longest sequence, for rnnfast's layers and for torch's packed sequences.

    python bench/lengths.py [--cells lstm,gru] [--shapes B,T,H ...] [--threads N] [--repeats R]
                            [--quick] [--markdown]

For every cell, shape and mode (forward in eval mode; train: forward + backward with every weight
gradient) four batches are timed, interleaved run by run like ``rnnfast bench``:

- padded: no lengths, every row runs T steps;
- full: lengths all T (the bookkeeping of lengths, and nothing else, on top of padded);
- ragged: lengths uniform in [1, T];
- short: lengths uniform in [1, T/4].

rnnfast runs ``rnnfast.LSTM``/``GRU(..., lengths=)``; torch runs ``torch.nn.LSTM``/``GRU`` on the
padded tensor, or on ``pack_padded_sequence(..., enforce_sorted=False)`` when lengths are given.
Both get the same weights, and their outputs (forward) or input gradients (train) are compared
before anything is timed. The goal (issue 5): a variable-length batch costs no more than the padded
one, and less when the lengths are short. "steps" is the fraction of the padded batch's row-steps
the lengths ask for (sum of lengths / (B*T)): the cost a batch would have if it paid only for them.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
from typing import Any, Callable

import numpy as np

import rnnfast
from rnnfast.benchmark import _settle, _time_calls

VARIANTS = ("padded", "full", "ragged", "short")
DEFAULT_SHAPES = ((16, 100, 256), (64, 50, 512))
QUICK_SHAPES = ((4, 12, 16),)


def lengths_for(variant: str, B: int, T: int, rng: np.random.Generator) -> np.ndarray | None:
    if variant == "padded":
        return None
    if variant == "full":
        return np.full(B, T, dtype=np.int64)
    top = T if variant == "ragged" else max(1, T // 4)
    return rng.integers(1, top + 1, size=B).astype(np.int64)


def rnnfast_fns(cell: str, H: int, state: dict[str, np.ndarray], x: np.ndarray, dy: np.ndarray,
                lengths: np.ndarray | None) -> dict[str, Callable[[], np.ndarray]]:
    """forward() -> y and train() -> dx for one batch."""
    def build(training: bool) -> Any:
        layer = getattr(rnnfast, cell.upper())(H, H, dtype=np.float32)
        layer.load_state_dict(state)
        return layer.train(training)

    infer, trainer = build(False), build(True)

    def forward() -> np.ndarray:
        return infer(x, lengths=lengths)[0]

    def train() -> np.ndarray:
        trainer.zero_grad()
        trainer(x, lengths=lengths)
        return trainer.backward(dy)[0]

    return {"forward": forward, "train": train}


def torch_fns(cell: str, H: int, state: dict[str, np.ndarray], x: np.ndarray, dy: np.ndarray,
              lengths: np.ndarray | None) -> dict[str, Callable[[], np.ndarray]]:
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    T = x.shape[0]
    module = getattr(torch.nn, cell.upper())(H, H)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    xt, dyt = torch.from_numpy(x), torch.from_numpy(dy)
    lens = None if lengths is None else torch.from_numpy(lengths)

    def run(inp: Any) -> Any:
        if lens is None:
            return module(inp)[0]
        packed = pack_padded_sequence(inp, lens, enforce_sorted=False)
        return pad_packed_sequence(module(packed)[0], total_length=T)[0]

    def forward() -> np.ndarray:
        module.eval()
        with torch.no_grad():
            return run(xt).numpy()

    def train() -> np.ndarray:
        module.train()
        module.zero_grad(set_to_none=True)
        leaf = xt.clone().requires_grad_(True)
        run(leaf).backward(dyt)
        return leaf.grad.numpy()

    return {"forward": forward, "train": train}


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


def measure(cell: str, B: int, T: int, H: int, repeats: int, with_torch: bool,
            min_time: float) -> list[dict[str, Any]]:
    """One row per mode and variant: median ms of rnnfast (and torch), interleaved."""
    rng = np.random.default_rng(0)
    G = 4 if cell == "lstm" else 3
    s = 1.0 / np.sqrt(H)
    state = {f"{w}_l0": rng.uniform(-s, s, shape).astype(np.float32)
             for w, shape in (("weight_ih", (G * H, H)), ("weight_hh", (G * H, H)),
                              ("bias_ih", (G * H,)), ("bias_hh", (G * H,)))}
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    lens = {v: lengths_for(v, B, T, rng) for v in VARIANTS}
    libs: dict[str, Callable[..., dict[str, Callable[[], np.ndarray]]]] = {"rnnfast": rnnfast_fns}
    if with_torch:
        libs["torch"] = torch_fns
    fns = {(lib, v): make(cell, H, state, x, dy, lens[v])
           for lib, make in libs.items() for v in VARIANTS}
    rows = []
    for mode in ("forward", "train"):
        if with_torch:  # same answers first: outputs (forward) or dx (train), past-the-end rows 0
            for v in VARIANTS:
                err = rel_error(fns[("rnnfast", v)][mode](), fns[("torch", v)][mode]())
                if err > 1e-4:
                    raise SystemExit(f"{cell} {B},{T},{H} {mode} {v}: rnnfast and torch differ "
                                     f"(relative error {err:.1e}); not timed")
        calls = {}
        for key, f in fns.items():
            f[mode]()
            warm = _time_calls(f[mode], 1)
            calls[key] = max(1, int(np.ceil(min_time / max(warm, 1e-9))))
        times: dict[tuple[str, str], list[float]] = {key: [] for key in fns}
        gc.disable()
        try:
            for _ in range(repeats):
                for key, f in fns.items():
                    _settle()
                    f[mode]()
                    times[key].append(_time_calls(f[mode], calls[key]))
        finally:
            gc.enable()
        for v in VARIANTS:
            steps = 1.0 if lens[v] is None else float(lens[v].sum()) / (B * T)
            row: dict[str, Any] = {"cell": cell, "B": B, "T": T, "H": H, "mode": mode,
                                   "variant": v, "steps": steps}
            for lib in libs:
                ms = statistics.median(times[(lib, v)]) * 1e3
                row[f"{lib}_ms"] = ms
                row[f"{lib}_vs_padded"] = ms / (statistics.median(times[(lib, "padded")]) * 1e3)
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], with_torch: bool) -> str:
    head = ["case", "mode", "lengths", "steps", "rnnfast ms", "rnnfast / padded"]
    if with_torch:
        head += ["torch ms", "torch / padded", "vs torch"]
    align = [":---"] * 3 + ["---:"] * (len(head) - 3)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    for r in rows:
        cells = [f"{r['cell']} B={r['B']} T={r['T']} H={r['H']}", r["mode"], r["variant"],
                 f"{r['steps']:.2f}", f"{r['rnnfast_ms']:.3g}", f"{r['rnnfast_vs_padded']:.2f}"]
        if with_torch:
            cells += [f"{r['torch_ms']:.3g}", f"{r['torch_vs_padded']:.2f}",
                      f"{r['torch_ms'] / r['rnnfast_ms']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 5: a variable-length batch costs no more than the padded one, and less when its
    lengths are short. Lengths that are all T run the padded batch's code itself (the kernels drop
    them; tests/test_kernels.py checks the results are bitwise equal), so their ratio shows the
    run's noise."""
    def worst(variants):
        return max(r["rnnfast_vs_padded"] for r in rows if r["variant"] in variants)

    def ratio_range(variant):
        ratios = [r["rnnfast_vs_padded"] for r in rows if r["variant"] == variant]
        return f"{min(ratios):.2f}-{max(ratios):.2f}"

    ragged, short = worst(("ragged", "short")), worst(("short",))
    per_step = max(r["rnnfast_vs_padded"] / r["steps"] for r in rows if r["variant"] == "ragged")
    return [
        f"- goal (issue 5): ragged and short batches cost no more than the padded batch: "
        f"{'met' if ragged <= 1.0 else 'MISSED'} (worst {ragged:.2f})",
        f"- goal (issue 5): short lengths cost less than the padded batch: "
        f"{'met' if short < 1.0 else 'MISSED'} (worst {short:.2f})",
        f"- ragged batches: time / padded time at most {per_step:.2f}x the fraction of row-steps "
        f"they have (1.00: paying for real steps only)",
        f"- lengths all T: the padded batch's own code; time / padded {ratio_range('full')} "
        f"(the run's noise)",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default="lstm,gru")
    p.add_argument("--shapes", nargs="+", default=None, metavar="B,T,H")
    p.add_argument("--threads", type=int, default=None, help="default: all available cores")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.02, help="seconds per timed run")
    p.add_argument("--no-torch", action="store_true", help="time rnnfast alone")
    p.add_argument("--quick", action="store_true", help="a tiny shape and 2 repeats: a smoke test")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table (default: CSV)")
    args = p.parse_args(argv)
    shapes = (QUICK_SHAPES if args.quick else DEFAULT_SHAPES) if args.shapes is None else \
        tuple(tuple(int(v) for v in s.split(",")) for s in args.shapes)
    repeats = 2 if args.quick else args.repeats
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch
        except ImportError:
            with_torch = False
            print("torch is not importable: rnnfast alone", file=sys.stderr)
    threads = args.threads or rnnfast.benchmark.available_cores()
    rnnfast.set_num_threads(threads)
    if with_torch:
        torch.set_num_threads(threads)
    rows = []
    for cell in args.cells.split(","):
        for B, T, H in shapes:
            min_time = 0.002 if args.quick else args.min_time
            rows += measure(cell, B, T, H, repeats, with_torch, min_time)
    if args.markdown:
        print(f"`python bench/lengths.py {' '.join(argv if argv is not None else sys.argv[1:])}`, "
              f"float32, {threads} thread(s), median of {repeats} interleaved runs:\n")
        print(markdown(rows, with_torch))
        print()
        print("\n".join(goal_lines(rows)))
    else:
        keys = list(rows[0])
        print(",".join(keys))
        for r in rows:
            print(",".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
