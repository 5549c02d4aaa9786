"""The documentation stays in step with the code: docs/API.md is generated from the docstrings, and
the README keeps the two set-up commands CI runs."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="docs/API.md is generated on Python 3.11; signatures print differently elsewhere")
def test_api_reference_is_current():
    tool = ROOT / "tools" / "api_reference.py"
    done = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_readme_opens_with_the_two_setup_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ['pip install . && rnnfast check', 'pip install ".[test]" && python -m pytest']


def test_readme_examples_run():
    pytest.importorskip("torch")  # the second example loads a torch module's weights
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = text.split("```python\n")[1:]
    assert len(blocks) >= 2
    for k, block in enumerate(blocks):
        exec(compile(block.split("```", 1)[0], f"README.md python block {k}", "exec"), {})
