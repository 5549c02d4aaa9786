"""The type stub of the compiled kernels, ``python/rnnfast/_core.pyi``, against the module it
describes, and the stub at work in a type checker.

mypy's stubtest compares the stub with the running ``rnnfast._core`` (names, kinds, the values the
module defines). It cannot see the parameters of a pybind11 function (they carry no inspectable
signature), so the parameters are checked here against the signature line pybind11 writes at the
top of each function's docstring (from the ``py::arg`` list in csrc/bind/*.cpp) and against
``rnnfast.reference``, which takes the same arguments: every name, its kind (positional or
keyword-only) and its default.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import rnnfast
from rnnfast import _core, reference

STUB = Path(rnnfast.__file__).with_name("_core.pyi")
KERNELS = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
           "rnn_backward"]
REQUIRED = "<required>"  # stands for "no default" in a parameter list

needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installed (it is in the 'test' extra)")


def _params_of_def(fn: ast.FunctionDef) -> list[tuple[str, str, object]]:
    """[(name, kind, default)] of a parsed ``def``; kind "positional" or "keyword"."""
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [REQUIRED] * (len(positional) - len(a.defaults)) + [
        ast.literal_eval(d) for d in a.defaults]
    params = [(p.arg, "positional", d) for p, d in zip(positional, defaults)]
    params += [(p.arg, "keyword", REQUIRED if d is None else ast.literal_eval(d))
               for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    assert a.vararg is None and a.kwarg is None, f"{fn.name}: no *args / **kwargs expected"
    return params


def _params_of_signature(sig: inspect.Signature) -> list[tuple[str, str, object]]:
    kinds = {inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
             inspect.Parameter.POSITIONAL_ONLY: "positional",
             inspect.Parameter.KEYWORD_ONLY: "keyword"}
    return [(p.name, kinds[p.kind], REQUIRED if p.default is inspect.Parameter.empty else p.default)
            for p in sig.parameters.values()]


def _stub_defs() -> dict[str, list[ast.FunctionDef]]:
    """Every module-level function of the stub: name -> its definitions (overloads in order)."""
    defs: dict[str, list[ast.FunctionDef]] = {}
    for node in ast.parse(STUB.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef):
            defs.setdefault(node.name, []).append(node)
    return defs


def _binding_params(name: str) -> list[tuple[str, str, object]]:
    """The parameters pybind11 reports for the compiled function ``name`` (its docstring's first
    line, e.g. ``lstm_forward(x: object, ..., *, coupled: bool = False, ...) -> tuple``)."""
    first_line = getattr(_core._impl, name).__doc__.splitlines()[0]
    assert first_line.startswith(f"{name}("), first_line
    return _params_of_def(ast.parse(f"def {first_line}: ...").body[0])


@needs_mypy
def test_stubtest_passes():
    """mypy's stubtest finds no difference between the stub and the running module."""
    result = subprocess.run([sys.executable, "-m", "mypy.stubtest", "rnnfast._core"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stub_names_every_compiled_function():
    """A function added to the bindings (and so to the compiled module) needs a stub."""
    compiled = {n for n in dir(_core._impl) if not n.startswith("_")
                and callable(getattr(_core._impl, n))}
    assert compiled <= set(_stub_defs()), f"missing from _core.pyi: {compiled - set(_stub_defs())}"


@pytest.mark.parametrize("name", [*KERNELS, "set_num_threads", "get_num_threads"])
def test_stub_parameters_are_the_bindings(name):
    """Names, kinds and defaults as the ``py::arg`` lists of csrc/bind/*.cpp bind them. The
    overloads keyed on ``training`` may leave its default out (``training: Literal[True]``)."""
    expected = _binding_params(name)
    defs = _stub_defs()[name]
    assert _params_of_def(defs[-1]) == expected, "the last (most general) definition"
    for fn in defs[:-1]:
        got = _params_of_def(fn)
        assert [(n, k) for n, k, _ in got] == [(n, k) for n, k, _ in expected]
        for (n, _, default), (_, _, want) in zip(got, expected):
            assert default == want or (n == "training" and default == REQUIRED), (name, n)


@pytest.mark.parametrize("name", KERNELS)
def test_reference_takes_the_stubs_parameters(name):
    """SPEC: rnnfast.reference has the kernels' names and arguments, so the stub fits it too."""
    expected = _params_of_def(_stub_defs()[name][-1])
    assert _params_of_signature(inspect.signature(getattr(reference, name))) == expected


# Typed use of the kernels. Lines marked "# E: <code>" must be mypy errors with that code, and no
# other line may be one. assert_type pins what the stub promises: the dtype of x carries through,
# a training forward returns a cache dict, an inference forward returns None for it.
SNIPPET = '''

import numpy as np
import numpy.typing as npt
from typing_extensions import assert_type

import rnnfast
from rnnfast import _core

F32 = npt.NDArray[np.float32]
x = np.zeros((3, 2, 4), np.float32)
h = np.zeros((2, 5), np.float32)
w = np.zeros((20, 4), np.float32)
u = np.zeros((20, 5), np.float32)
lengths = np.array([3, 1], np.int64)

y, h_n, c_n, cache = _core.lstm_forward(x, h, h, w, u, training=True, lengths=lengths)
assert_type(y, F32)
assert_type(cache, dict[str, F32])
grads = _core.lstm_backward(None, h_n, None, x, h, h, w, u, cache, lengths=lengths)
assert_type(grads["dw_hh"], F32)
assert_type(_core.lstm_forward(x, h, h, w, u)[3], None)
flag: bool = bool(len(lengths))
assert_type(_core.gru_forward(x, h, w, u, training=flag)[2], dict[str, F32] | None)
assert_type(_core.rnn_forward(x, h, w, u, nonlinearity="relu", training=True)[2], dict[str, F32])
assert_type(rnnfast.build_info(), dict[str, str])
assert_type(rnnfast.get_num_threads(), int)
rnnfast.set_num_threads(2)

_, _, _, none = _core.lstm_forward(x, h, h, w, u)
_core.lstm_backward(None, None, None, x, h, h, w, u, none)  # E: arg-type
_core.rnn_forward(x, h, w, u, nonlinearity="sigmoid")  # E: call-overload
_core.gru_forward(x, h, w, u, None, None, True)  # E: call-overload
_core.gru_backward(None, None, x, h, w, u, {}, lengths=[3, 1])  # E: arg-type
_core.lstm_forward(x.tolist(), h, h, w, u)  # E: call-overload
rnnfast.set_num_threads("2")  # E: arg-type
'''


@needs_mypy
def test_stub_types_a_typical_use(tmp_path):
    source = tmp_path / "use_kernels.py"
    source.write_text(textwrap.dedent(SNIPPET), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--show-error-codes",
         "--cache-dir", str(tmp_path / "cache"), str(source)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    errors = {}
    for line in result.stdout.splitlines():
        if ": error: " in line:
            number = int(line.split(":")[1])
            errors[number] = line.rsplit("[", 1)[-1].rstrip("]")
    expected = {n: line.split("# E: ")[1].strip()
                for n, line in enumerate(source.read_text().splitlines(), start=1)
                if "# E: " in line}
    assert errors == expected, result.stdout + result.stderr
