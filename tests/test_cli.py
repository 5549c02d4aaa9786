"""The rnnfast command: info and check run and report."""

from __future__ import annotations

import subprocess
import sys

from rnnfast.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for field in ("rnnfast", "threads", "compiler", "flags", "SIMD", "Eigen"):
        assert field in out


def test_check_passes_and_reports_every_kernel(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    for name in ("lstm", "peephole", "coupled", "proj", "gru linear_before_reset=False", "relu"):
        assert name in out
    assert "0 failed" in out and "MISS" not in out


def test_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "rnnfast", "info"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "SIMD" in done.stdout
