"""Write docs/API.md, the API reference, from the public objects' signatures and NumPy-style
docstrings (shapes in brackets). tests/test_docs.py checks that the committed file is current.

    python tools/api_reference.py            # rewrite docs/API.md
    python tools/api_reference.py --check    # exit 1 if docs/API.md is out of date
"""

from __future__ import annotations

import argparse
import inspect
import pathlib
import sys

import rnnfast

OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "API.md"

SECTIONS = [
    ("Cells", rnnfast, ["lstm_cell", "gru_cell", "rnn_cell"]),
    ("Layers", rnnfast, ["LSTM", "GRU", "RNN"]),
    ("Sequence to sequence", rnnfast, ["Seq2Seq"]),
    ("Building blocks: rnnfast.nn", rnnfast.nn, ["Embedding", "Linear"]),
    ("Losses: rnnfast.losses", rnnfast.losses, ["softmax_cross_entropy", "log_softmax"]),
    ("Optimisers: rnnfast.optim", rnnfast.optim, ["SGD", "Adam", "clip_grad_norm"]),
    ("Data: rnnfast.data", rnnfast.data, ["Vocab", "pad_batch", "minibatches"]),
    ("Metrics: rnnfast.metrics", rnnfast.metrics, ["bleu", "corpus_bleu"]),
    ("Kernels: rnnfast._core (and its twin rnnfast.reference)", rnnfast.reference,
     ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward", "rnn_backward"]),
    ("Threads and build", rnnfast, ["set_num_threads", "get_num_threads", "build_info"]),
]
METHODS = ["forward", "backward", "fit", "predict", "log_prob", "step", "train", "eval",
           "zero_grad", "parameters", "state_dict", "load_state_dict", "save", "load"]


def _signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _entry(name: str, obj, level: str = "###") -> list[str]:
    lines = [f"{level} `{name}{_signature(obj)}`", ""]
    doc = inspect.getdoc(obj)
    lines += [doc, ""] if doc else ["(no docstring)", ""]
    return lines


def render() -> str:
    lines = ["# rnnfast API reference", "",
             "Generated from the docstrings by `python tools/api_reference.py`; shapes in brackets.", ""]
    for title, module, names in SECTIONS:
        lines += [f"## {title}", ""]
        for name in names:
            obj = getattr(module, name)
            lines += _entry(name, obj)
            if inspect.isclass(obj):
                for method in METHODS:
                    attr = obj.__dict__.get(method)
                    if attr is None:
                        for base in obj.__mro__[1:]:
                            if method in base.__dict__:
                                attr = base.__dict__[method]
                                break
                    if attr is None:
                        continue
                    fn = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
                    if callable(fn) and inspect.getdoc(fn):
                        lines += _entry(f"{name}.{method}", fn, "####")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    text = render()
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run python tools/api_reference.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
