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


def test_the_portable_builds_fma_ceiling_is_below_an_fma_builds():
    """rnnfast._core.fma_peak_gflops in the portable build (SSE2: multiplies and adds of four
    floats) stays well below its value in a build with FMA (8 or 16 floats a fused instruction):
    by 2x on a Zen 4, 4x on an Intel core of two FMA ports. A ceiling whose compiler kept one lane
    of each chain, crediting itself with eight, read 98 GFLOP/s there against 117 (47 once every
    lane was computed)."""
    present = {name for name in RUNNABLE if name in ("_core_x86_64", "_core_avx2", "_core_avx512")}
    if "_core_x86_64" not in present or len(present) < 2:
        pytest.skip("needs the dispatch build (RNNFAST_DISPATCH=ON): the portable kernels and "
                    "one with FMA")

    def best(name):
        module = importlib.import_module(f"rnnfast.{name}")
        return max(module.fma_peak_gflops(1, 0.01) for _ in range(3))

    portable = best("_core_x86_64")
    fused = max(best(name) for name in present - {"_core_x86_64"})
    assert portable < 0.75 * fused, (portable, fused)
