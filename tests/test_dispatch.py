"""CPU dispatch: which build of the kernels runs, forcing a lower one, and every build present on
this machine (that this CPU can run) against the NumPy reference."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import rnnfast
from rnnfast import _core
from rnnfast.check import run_checks

RUNNABLE = [name for name in _core.available
            if name == "_core_native" or _core._LEVELS[name] <= _core.cpu_flags()]


def test_build_info_names_the_running_kernels():
    info = rnnfast.build_info()
    assert info["module"] == _core._impl.__name__.rsplit(".", 1)[1]
    assert info["module"] in info["available"].split(", ")
    assert info["arch"] in ("native", "x86-64", "x86-64-v3", "x86-64-v4")


def test_the_best_runnable_build_is_chosen():
    assert RUNNABLE, "no build of the kernels can run here"
    allowed = _core._candidates(os.environ.get("RNNFAST_ISA") or None)  # honours a cap, if set
    assert rnnfast.build_info()["module"] == [n for n in RUNNABLE if n in allowed][0]


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_runnable_build_matches_the_reference(name):
    module = importlib.import_module(f"rnnfast.{name}")
    rows = run_checks(seed=3, module=module)
    misses = [r for r in rows if not r.ok]
    assert not misses, f"{name}: {misses}"


CAPS = {"_core_avx512": "avx512", "_core_avx2": "avx2", "_core_x86_64": "x86-64",
        "_core_native": "native"}


@pytest.mark.parametrize("name", RUNNABLE)
def test_environment_variable_forces_a_build(name):
    env = dict(os.environ, RNNFAST_ISA=CAPS[name])
    done = subprocess.run([sys.executable, "-c", "import rnnfast; print(rnnfast.build_info()['module'])"],
                          env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == name


def test_unknown_isa_is_a_clear_error():
    env = dict(os.environ, RNNFAST_ISA="sse9")
    done = subprocess.run([sys.executable, "-c", "import rnnfast"], env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0
    assert "RNNFAST_ISA" in done.stderr and "sse9" in done.stderr
