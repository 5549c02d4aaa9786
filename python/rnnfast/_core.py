"""The compiled kernels, from the fastest build this CPU can run.

A build holds one or more compiled modules, one per instruction-set level (see CMakeLists.txt):
``_core_native`` (a source build tuned for the building CPU), or ``_core_avx512`` (x86-64-v4),
``_core_avx2`` (x86-64-v3: AVX2 + FMA) and ``_core_x86_64`` (baseline) in a portable wheel. The
first one present whose instructions the CPU has is imported and its functions are re-exported here.
Set ``RNNFAST_ISA`` to ``x86-64``, ``avx2`` or ``avx512`` to cap the choice (for testing, or for a
machine that misreports its features); ``native`` picks the tuned build if present.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from types import ModuleType

# Module -> the /proc/cpuinfo flags its instruction set needs (x86-64-v3 and -v4 as gcc defines them).
_LEVELS = {
    "_core_avx512": {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma",
                     "bmi1", "bmi2", "f16c", "movbe", "abm"},
    "_core_avx2": {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"},
    "_core_x86_64": set(),
}
_CAPS = {"avx512": "_core_avx512", "avx2": "_core_avx2", "x86-64": "_core_x86_64"}
_ORDER = ["_core_native", "_core_avx512", "_core_avx2", "_core_x86_64"]


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _candidates(cap: str | None) -> list[str]:
    if cap is None or cap == "native":
        return list(_ORDER)
    if cap not in _CAPS:
        raise ImportError(f"RNNFAST_ISA: expected one of {sorted(_CAPS) + ['native']}, got {cap!r}")
    return _ORDER[_ORDER.index(_CAPS[cap]):]


# How long an OpenMP thread spins before it sleeps. libgomp's default (300,000 spins, milliseconds)
# keeps our idle worker busy long after a kernel returns, taking a core from whatever the program
# does next (NumPy's BLAS threads, most often, which then wait on each other): measured 5-25x
# slower small training steps on a 2-core machine. 10,000 spins (~0.1 ms here) still covers the
# waits at the barriers inside a kernel. Applied while the kernels' libgomp initialises, and only
# when the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT; the environment is restored after.
_SPINCOUNT = "10000"


def _import(name: str) -> ModuleType:
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return importlib.import_module(f"rnnfast.{name}")
    os.environ["GOMP_SPINCOUNT"] = _SPINCOUNT
    try:
        return importlib.import_module(f"rnnfast.{name}")
    finally:
        del os.environ["GOMP_SPINCOUNT"]


def _select() -> ModuleType:
    flags = cpu_flags()
    tried = []
    for name in _candidates(os.environ.get("RNNFAST_ISA") or None):
        if name in _LEVELS and not _LEVELS[name] <= flags and name != "_core_x86_64":
            continue  # this CPU lacks the instructions
        try:
            return _import(name)
        except ImportError:
            tried.append(name)
    raise ImportError(f"rnnfast: no compiled kernels usable on this CPU (looked for {tried})")


_impl = _select()
available = [name for name in _ORDER
             if importlib.util.find_spec(f"rnnfast.{name}") is not None]

lstm_forward = _impl.lstm_forward
lstm_backward = _impl.lstm_backward
gru_forward = _impl.gru_forward
gru_backward = _impl.gru_backward
rnn_forward = _impl.rnn_forward
rnn_backward = _impl.rnn_backward
set_num_threads = _impl.set_num_threads
get_num_threads = _impl.get_num_threads
set_local_threads = _impl.set_local_threads
core_round_trip_ns = _impl.core_round_trip_ns
fma_peak_gflops = _impl.fma_peak_gflops


def build_info() -> dict[str, str]:
    """Version, compiler, flags, instruction set of the running kernels, and the builds present."""
    info = dict(_impl.build_info())
    info["available"] = ", ".join(available)
    return info
