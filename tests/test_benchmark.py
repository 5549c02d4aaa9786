"""Smoke test of the benchmark harness (``rnnfast bench``, rnnfast.benchmark): it runs, writes and
reads its files, checks competitors against the reference, and refuses one that is wrong.

No timing is asserted (timings live in bench/); only that the harness measured something and that
its bookkeeping (flops, CSV, refusal, exit status) is right. Tiny shapes, one run, one thread.
"""

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnfast import benchmark as rb

QUICK = ["--quick", "--repeats", "1", "--threads", "1", "--min-time", "0", "--sgemm-size", "128"]
ROOT = Path(__file__).resolve().parents[1]


def _available(name):
    return rb.missing_module(name) is None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``rnnfast bench --quick`` once, with --csv and --markdown: (exit status, output folder)."""
    out = tmp_path_factory.mktemp("bench")
    status = rb.main([*QUICK, "--csv", str(out / "quick.csv"), "--markdown", str(out / "RESULTS.md")])
    return status, out


def test_flops_count_the_gemms():
    lstm = rb.Case("sequence", "lstm", B=3, T=5, I=7, H=11)
    assert lstm.flops("forward") == 2 * 5 * 3 * 4 * 11 * (7 + 11)
    assert lstm.flops("train") == 3 * lstm.flops("forward")
    stack = rb.Case("layer", "gru", B=2, T=4, I=6, H=5, layers=2, directions=2)
    per_direction = 2 * 4 * 2 * 3 * 5
    assert stack.flops("forward") == 2 * per_direction * ((6 + 5) + (2 * 5 + 5))


def test_grid_and_shapes():
    cases = rb.grid()
    assert [(c.B, c.T, c.H) for c in cases if c.kind == "sequence" and c.cell == "lstm"] == \
        list(rb.SEQUENCE_SHAPES)
    assert {c.kind for c in cases} == {"sequence", "layer", "cell"}
    assert rb.parse_shape("2,3,4") == (2, 3, 4, 4)
    assert rb.parse_shape("2,3,5,4") == (2, 3, 5, 4)
    with pytest.raises(Exception, match="B,T,H"):
        rb.parse_shape("2,3")
    custom = rb.grid(cells=("gru",), kinds=("sequence",), shapes=[(2, 3, 5, 4)])
    assert custom == [rb.Case("sequence", "gru", 2, 3, 5, 4)]
    assert [(c.B, c.H) for c in cases if c.kind == "cell"] == [rb.CELL_SHAPE] * 2
    assert rb.parse_cell_shape("8,256") == (8, 256)
    for bad in ("8", "8,0", "8,256,3", "a,b"):
        with pytest.raises(Exception, match="B,H"):
            rb.parse_cell_shape(bad)
    steps = rb.grid(cells=("lstm",), kinds=("cell",), cell_shapes=[(8, 64), (1, 16)])
    assert steps == [rb.Case("cell", "lstm", 8, 1, 64, 64), rb.Case("cell", "lstm", 1, 1, 16, 16)]
    assert steps[0].label == "lstm_cell B=8 H=64"


def test_the_cell_goal_is_judged_at_the_grid_cell_shape_only():
    # Extra cell steps (--cell-shapes) are timed and shown, but the 5x goal of issue 5 is about
    # B = 1, H = 256: a slower step of 32 rows does not make it missed.
    grid_step = rb.Case("cell", "lstm", *rb.CELL_SHAPE[:1], 1, rb.CELL_SHAPE[1], rb.CELL_SHAPE[1])
    wide_step = rb.Case("cell", "lstm", 32, 1, 256, 256)
    results = [rb.Result(c, "forward", name, rb.OK, times=[t])
               for c, ratio in ((grid_step, 6.0), (wide_step, 2.0))
               for name, t in (("rnnfast", 1e-4), ("torch", ratio * 1e-4))]
    report = rb.Report(rb.Settings(threads=1, against=("torch",)), results, [1e-3], "", "test")
    assert dict(rb.goals(report))["cell step >= 5x torch"].startswith("met (worst 6.00")


def test_quick_run_writes_a_csv_that_reads_back(quick_run):
    status, out = quick_run
    assert status == 0
    rows = rb.read_csv(str(out / "quick.csv"))
    sgemm, peak, rows = rows[0], rows[1], rows[2:]
    assert sgemm["kind"] == "sgemm" and float(sgemm["gflops"]) > 0
    assert peak["kind"] == "fma_peak" and float(peak["gflops"]) > 0 and not peak["median_ms"]
    cases = rb.grid(quick=True)
    expected = {(c.label, mode, name) for c in cases for mode in c.modes for name in rb.CONTENDERS}
    assert {(r["case"], r["mode"], r["contender"]) for r in rows} == expected
    for r in rows:
        name, mode = r["contender"], r["mode"]
        if name == "onnxruntime" and mode == "train":
            assert r["status"] == rb.NA
        elif name == "rnnfast" or _available(name):
            assert r["status"] == rb.OK, r
            assert float(r["median_ms"]) > 0 and int(r["runs"]) >= 1
            assert float(r["max_rel_error"]) <= rb.tolerance(mode)
        else:
            assert r["status"] == rb.ABSENT
        if name == "rnnfast":
            assert float(r["gflops"]) > 0 and float(r["speedup"]) == 1.0


def test_quick_run_writes_results_markdown(quick_run):
    _, out = quick_run
    text = (out / "RESULTS.md").read_text()
    assert "| case | mode | rnnfast ms |" in text
    assert "numpy" in text and "rnnfast 0." in text and "Machine:" in text
    assert "Produced by `" in text
    for case in rb.grid(quick=True):
        assert f"| {case.label} | forward |" in text


def test_compare_script(quick_run):
    _, out = quick_run
    csv_file = str(out / "quick.csv")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "compare.py"), csv_file, csv_file,
                           "--contender", "rnnfast"], capture_output=True, text=True, check=True)
    assert "geometric mean speed-up after/before, rnnfast: 1.000x" in done.stdout


def test_lengths_script_quick():
    """bench/lengths.py: every cell, mode and kind of lengths timed, rnnfast checked against torch's
    packed sequences first (it exits non-zero if they disagree)."""
    pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "lengths.py"), "--quick"],
                          capture_output=True, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("cell,B,T,H,mode,variant,steps,rnnfast_ms")
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 2 * 2 * 4  # cells x modes x kinds of lengths
    assert {r[5] for r in rows} == {"padded", "full", "ragged", "short"}
    assert all(float(r[7]) > 0 and float(r[9]) > 0 for r in rows)


def test_threads_script_tiny():
    """bench/threads.py: one row per cell and importable library, every contender checked against
    the reference before it is timed; fewer than 2 threads is refused (1 is always measured)."""
    script = str(ROOT / "bench" / "threads.py")
    done = subprocess.run([sys.executable, script, "--shapes", "2,3,8", "--threads", "2",
                           "--repeats", "1", "--markdown"], capture_output=True, text=True,
                          check=True)
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| lstm")
            or line.startswith("| gru")]
    libraries = {"rnnfast"} | {name for name, module in (("torch", "torch"), ("ORT", "onnxruntime"))
                               if _available(module)}
    assert len(rows) == 2 * len(libraries)
    assert {r[1] for r in rows} == libraries
    assert all(float(r[2]) > 0 and float(r[4]) > 0 for r in rows)
    refused = subprocess.run([sys.executable, script, "--threads", "1"], capture_output=True,
                             text=True, check=False)
    assert refused.returncode == 2 and "--threads: expected at least 2" in refused.stderr


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_onnx_and_torch_agree_with_the_reference(cell):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    case = rb.Case("sequence", cell, B=3, T=4, I=5, H=6)
    problem = rb.make_problem(case)
    want = rb.judge(case, problem).forward()
    for contender in (rb.torch_contender(case, problem), rb.onnx_contender(case, problem, 1)):
        result = rb.verify(contender, "forward", want, case)
        assert result.status == rb.OK, result.note
        assert result.error <= rb.tolerance("forward")


# A competitor wired wrongly: the LSTM's gates left in torch's order, or the GRU with ONNX's default
# linear_before_reset=0 (Cho et al.'s candidate, not PyTorch's).
WRONG_WIRING = {"lstm": {"gate_order": (0, 1, 2, 3)}, "gru": {"linear_before_reset": 0}}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_wrong_competitor_is_refused(cell):
    pytest.importorskip("onnxruntime")
    case = rb.Case("sequence", cell, B=3, T=4, I=5, H=6)
    problem = rb.make_problem(case)
    want = rb.judge(case, problem).forward()
    wrong = rb.onnx_contender(case, problem, 1, **WRONG_WIRING[cell])
    result = rb.verify(wrong, "forward", want, case)
    assert result.status == rb.WRONG and result.fn is None
    assert result.error > 1e-3 and "disagrees with the reference" in result.note
    rb.time_interleaved([result], rb.Settings(threads=1, repeats=2, min_time=0))
    assert result.times == []


def test_a_wrong_competitor_fails_the_command(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    monkeypatch.setitem(rb.ONNX_GATE_ORDER, "lstm", (0, 1, 2, 3))
    status = rb.main([*QUICK, "--cells", "lstm", "--kinds", "sequence", "--against", "onnxruntime",
                      "--csv", str(tmp_path / "wrong.csv")])
    assert status == 1
    captured = capsys.readouterr()
    assert "WRONG" in captured.out and "disagrees with the reference" in captured.err
    with open(tmp_path / "wrong.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["contender"] == "onnxruntime"]
    assert rows and all(r["status"] == rb.WRONG and r["median_ms"] == "" for r in rows
                        if r["mode"] == "forward")


def test_missing_or_nan_tensors_count_as_wrong():
    want = {"y": np.ones((2, 3)), "h_n": np.ones((1, 3))}
    assert rb.compare({"y": np.ones((2, 3)), "h_n": np.ones((1, 3))}, want) == (0.0, "")
    error, where = rb.compare({"y": np.ones((2, 3))}, want)
    assert error == np.inf and where.startswith("h_n")
    error, where = rb.compare({"y": np.full((2, 3), np.nan), "h_n": np.ones((1, 3))}, want)
    assert error == np.inf and where == "y"


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    case = rb.Case("sequence", "lstm", B=1, T=2, I=3, H=3)
    results = [rb.Result(case, mode, name, rb.OK, times=[t]) for mode in case.modes
               for name, t in (("rnnfast", 1e-3), ("torch", 2e-3))]
    report = rb.Report(rb.Settings(threads=1, against=("torch",)), results, [1e-3], "", "test")
    rb.write_plot(report, str(tmp_path / "speedups.png"))
    assert (tmp_path / "speedups.png").read_bytes()[:4] == b"\x89PNG"


def test_sgemm_fraction_uses_the_products_timed_next_to_the_case():
    # Two cases on a machine that slowed down by half between them: each row's "% sgemm" is taken
    # against the sgemm timed next to it, not against the run's median.
    # The second case has twice the flops, so at half the speed it takes four times as long.
    fast, slow = rb.Case("sequence", "lstm", 1, 2, 3, 3), rb.Case("sequence", "lstm", 2, 2, 3, 3)
    results = [rb.Result(c, "forward", "rnnfast", rb.OK, times=[t])
               for c, t in ((fast, 1e-3), (slow, 4e-3))]
    settings = rb.Settings(threads=1, against=(), sgemm_size=100)
    report = rb.Report(settings, results, [1e-4, 1e-4, 2e-4, 2e-4], "", "test",
                       {fast: [1e-4, 1e-4], slow: [2e-4, 2e-4]})
    assert report.case_sgemm_gflops(fast) == pytest.approx(2 * 100 ** 3 / 1e-4 / 1e9)
    assert report.case_sgemm_gflops(slow) == pytest.approx(2 * 100 ** 3 / 2e-4 / 1e9)
    pct = {row["case"]: float(row["sgemm_pct"]) for row in rb.csv_rows(report)[1:]}
    for case in (fast, slow):
        r = report.find(case, "forward", "rnnfast")
        want = 100 * r.gflops / report.case_sgemm_gflops(case)
        assert pct[case.label] == pytest.approx(want, rel=1e-3)
    # Both rows ran at the same fraction of their machine's speed.
    assert pct[fast.label] == pytest.approx(pct[slow.label], rel=1e-3)
    # Without per-case products, the run's median is the denominator.
    plain = rb.Report(settings, results, [1e-4, 3e-4], "", "test")
    assert plain.case_sgemm_gflops(fast) == plain.sgemm_gflops


def test_notes_give_the_range_of_core_round_trips_measured_during_the_cases():
    # rnnfast's thread choice depends on how far apart its cores are, which can change during a
    # run on a virtual machine: the notes say what the run saw; cases without a measurement (0)
    # do not count, and a run without any prints no such line.
    cases = [rb.Case("sequence", "lstm", B, 2, 3, 3) for B in (1, 2, 3)]
    results = [rb.Result(c, "forward", "rnnfast", rb.OK, times=[1e-3]) for c in cases]
    settings = rb.Settings(threads=2, against=())
    report = rb.Report(settings, results, [1e-4], "", "test", {},
                       dict(zip(cases, (0, 340, 80))))
    lines = [n for n in rb.notes(report) if n.startswith("Cache-line round trip")]
    assert len(lines) == 1 and ": 80-340 ns (" in lines[0]
    plain = rb.Report(settings, results, [1e-4], "", "test")
    assert not any(n.startswith("Cache-line round trip") for n in rb.notes(plain))


def test_missed_ratio_goals_say_what_fraction_of_sgemm_they_need():
    # rnnfast as fast as torch (1.0x: the 1.25x forward goal is missed); torch runs at some known
    # fraction of the sgemm timed next to the case, so meeting the goal there needs 1.25x that.
    case = rb.Case("sequence", "lstm", B=2, T=3, I=4, H=4)
    flops = case.flops("forward")
    sgemm_s = 2 * 100 ** 3 / 20e9  # a 20 GFLOP/s yardstick
    torch_s = flops / 12e9         # torch at 12 GFLOP/s: 60% of it
    results = [rb.Result(case, mode, name, rb.OK, times=[torch_s if mode == "forward" else 1e-3])
               for mode in case.modes for name in ("rnnfast", "torch")]
    report = rb.Report(rb.Settings(threads=1, against=("torch",), sgemm_size=100), results,
                       [sgemm_s], "", "test", {case: [sgemm_s, sgemm_s]})
    assert rb.needed_sgemm_fraction(report, case, "forward", "torch", 1.25) == pytest.approx(0.75)
    verdicts = dict(rb.goals(report))
    assert verdicts["forward >= 1.25x torch on every shape"].startswith("MISSED (worst 1.00")
    assert "meeting it there needs 75% of sgemm" in verdicts["forward >= 1.25x torch on every shape"]
    # Not measured: no ORT in this run, so no fraction either.
    assert verdicts["forward >= 1.0x ORT on every shape"] == "not measured"
    header, rows = rb.table_rows(report)
    assert header[-2:] == ["% sgemm", "torch % sgemm"]
    forward = next(r for r in rows if r[1] == "forward")
    assert forward[-1] == "60%" and forward[-2] == "60%"
    # With the FMA ceiling measured, the verdict also says what fraction of it the goal needs:
    # 15 GFLOP/s of a 12 GFLOP/s ceiling is beyond the machine; of a 30 GFLOP/s one, half.
    for peak, text in ((12e9, "125% of the FMA ceiling (beyond this machine))"),
                       (30e9, "50% of the FMA ceiling)")):
        with_peak = dataclasses.replace(report, peak=[peak / 1e9])
        verdict = dict(rb.goals(with_peak))["forward >= 1.25x torch on every shape"]
        assert verdict.endswith("needs 75% of sgemm, " + text), verdict
        header, rows = rb.table_rows(with_peak)
        forward = next(r for r in rows if r[1] == "forward")
        assert forward[header.index("% peak")] == f"{100 * 12e9 / peak:.0f}%"
    assert rb.table_rows(report)[1][0][header.index("% peak")] == "-"
    # A goal that is met says nothing about sgemm.
    fast = [rb.Result(case, mode, name, rb.OK, times=[torch_s / (2 if name == "rnnfast" else 1)])
            for mode in case.modes for name in ("rnnfast", "torch")]
    met = rb.Report(report.settings, fast, [sgemm_s], "", "test", {case: [sgemm_s]})
    verdict = dict(rb.goals(met))["forward >= 1.25x torch on every shape"]
    assert verdict.startswith("met (worst 2.00") and "sgemm" not in verdict


def test_fma_ceiling_is_above_what_a_blas_gemm_reaches():
    # The ceiling counts the multiply-adds of one region of `threads` threads; no GEMM of the same
    # vectors can pass it. OpenBLAS's single-threaded sgemm on this CPU uses vectors at most as wide
    # as the build's (the test runs the native build), so its best run stays below the ceiling's
    # best; a miscount of its work per thread (lanes, chains) shows up against it.
    import rnnfast

    if rnnfast.build_info()["simd"] not in ("AVX2+FMA", "AVX512"):
        pytest.skip("the portable build's ceiling (no FMA) is below a vectorised BLAS")
    with rb.thread_limits(1, with_torch=False):
        sgemm = 2 * 512 ** 3 / min(rb.sgemm_times(512, 5)) / 1e9
        peak = max(rb.fma_peak_runs(5, 1))
    assert 0.9 * sgemm < peak < 4 * sgemm, (sgemm, peak)
