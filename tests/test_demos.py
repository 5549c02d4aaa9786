"""``rnnfast demo translate | charlm | parity`` run end to end through the CLI with tiny settings
(seconds each): they finish, print their summaries, write the plot, and leave the thread count as
they found it."""

import numpy as np
import pytest

import rnnfast
from rnnfast.cli import main


@pytest.fixture
def threads_kept():
    before = rnnfast.get_num_threads()
    yield
    assert rnnfast.get_num_threads() == before, "a demo changed the kernels' thread count"


def test_parity_demo(capsys, threads_kept):
    assert main(["demo", "parity", "--epochs", "2", "--train-size", "256", "--length", "8",
                 "--test-lengths", "16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "epoch  2/2" in out and "held-out accuracy" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("8 ", "16 "))]
    assert [r[0] for r in rows] == ["8", "16"]
    assert all(r[1].endswith("%") and r[2].endswith("%") for r in rows)


def test_translate_demo_with_plot(capsys, tmp_path, threads_kept):
    plot = tmp_path / "loss.png"
    assert main(["demo", "translate", "--epochs", "2", "--train-size", "200", "--test-size",
                 "10", "--hidden-size", "16", "--embed-size", "8", "--beam-size", "2",
                 "--samples", "3", "--threads", "1", "--plot", str(plot), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for expected in ("200 training pairs, 10 held out", "epoch  1/2", "epoch  2/2",
                     "exact match", "corpus BLEU-4", "greedy", "beam 2 (length penalty 0.75)",
                     "Sample translations (greedy vs beam 2)", "Loss curve written to"):
        assert expected in out, expected
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_charlm_demo_with_progress_bar(capsys, threads_kept):
    assert main(["demo", "charlm", "--epochs", "2", "--batches", "3", "--sentences", "60",
                 "--hidden-size", "16", "--seq-len", "16", "--batch-size", "8",
                 "--sample-len", "20", "--prompt", "Th"]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err  # tqdm writes to stderr
    assert "before training" in out and "Final samples" in out
    assert "perplexity" in out and "training" in captured.err  # the bar ran
    samples = [line.strip() for line in out.splitlines() if line.strip().startswith("Th")]
    assert len(samples) >= 3 and all(len(s) == 22 for s in samples[-3:])


def test_demo_needs_a_name(capsys):
    with pytest.raises(SystemExit):
        main(["demo"])
    assert "translate" in capsys.readouterr().err


def test_demos_are_reproducible(capsys):
    args = ["demo", "parity", "--epochs", "1", "--train-size", "128", "--length", "6",
            "--test-lengths", "--no-progress"]
    main(args)
    first = capsys.readouterr().out
    main(args)
    second = capsys.readouterr().out

    def strip_times(text):
        return [line.split("(")[0] for line in text.splitlines() if "Total" not in line]

    assert strip_times(first) == strip_times(second)
    assert np.isfinite(float(first.split("loss ")[1].split()[0]))
