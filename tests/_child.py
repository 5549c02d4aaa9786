"""Running test code in a child interpreter, for cases that might take an interpreter down.

``run_in_child("test_properties", "crash_prone_cases", path)`` starts ``sys.executable -c ...``,
which imports that module from this directory and calls the function with the string arguments;
the function's JSON-able result comes back. The child must exit cleanly: status 0, no signal (a
segmentation fault, an abort from a failed assert, a sanitizer report, libgomp's exit(1)...).
While it runs, the child writes ``case <name>`` lines to stderr, so that a crash names the case.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

HERE = str(Path(__file__).resolve().parent)
_MARK = "CHILD-RESULT "


def describe_exit(returncode: int) -> str:
    """'status 1', or the signal that killed the process, e.g. 'signal SIGSEGV'."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def run_in_child(module: str, function: str, *args: str, timeout: float = 600,
                 preexec_fn: Callable[[], None] | None = None) -> Any:
    """``module.function(*args)`` in a fresh interpreter; assert it exited cleanly; its result."""
    code = (f"import json, sys; sys.path.insert(0, {HERE!r}); import {module} as m; "
            f"r = m.{function}(*sys.argv[1:]); print({_MARK!r} + json.dumps(r), flush=True)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                            timeout=timeout, preexec_fn=preexec_fn, check=False)
    lines = result.stderr.splitlines()
    cases = [line for line in lines if line.startswith("case ")]
    said = "\n".join(line for line in lines if not line.startswith("case "))
    if len(said) > 6000:  # a sanitizer's report starts with what went wrong: keep the start
        said = f"{said[:4000]}\n[...]\n{said[-2000:]}"
    assert result.returncode == 0, (
        f"the child exited with {describe_exit(result.returncode)} during "
        f"{cases[-1] if cases else 'start-up'}\n--- its stderr ---\n{said}")
    results = [line for line in result.stdout.splitlines() if line.startswith(_MARK)]
    assert results, f"the child printed no result\n{result.stdout[-2000:]}\n{said[-2000:]}"
    return json.loads(results[-1][len(_MARK):])


def announce(name: str) -> None:
    """In the child: say which case runs next (see ``run_in_child``)."""
    print(f"case {name}", file=sys.stderr, flush=True)
