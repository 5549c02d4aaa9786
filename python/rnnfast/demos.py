"""``rnnfast demo translate | charlm | parity``: the three uses of recurrent networks the project
teaches, end to end, on data the package writes itself.

- translate: a GRU encoder-decoder learns to normalise human-written dates to ISO 8601, then
  greedy and beam-search translations of held-out dates are scored (exact match, BLEU);
- charlm: a character-level GRU language model of a generated English-like text, sampled one
  character at a time after every epoch so that the samples visibly improve;
- parity: a GRU reads bits and outputs their running XOR at every step, then is tested on longer
  strings than it was trained on.

Threads: the rnnfast kernels own the threads (``--threads``, default 1: the demos' matrices are
small, and on a busy 2-core machine one thread is fastest). NumPy's BLAS, used by the small dense
layers, is asked to run single-threaded so that it never competes with the kernels.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import time
from typing import Any

import numpy as np

from . import data, metrics
from ._core import get_num_threads, set_num_threads
from .losses import log_softmax, softmax_cross_entropy
from .nn import Embedding, Linear, _Composite
from .seq2seq import _CELLS, Seq2Seq, train_loop

__all__ = ["add_demo_parser", "charlm", "parity", "translate"]


@contextlib.contextmanager
def _single_threaded_blas():
    """Ask the OpenBLAS that NumPy loaded to use one thread, and restore its count on exit
    (best effort: Linux, OpenBLAS; elsewhere nothing changes).

    A tiny GEMM handed to several BLAS threads on a busy 2-core machine can take 100x longer than
    on one: the threads wait for each other and for the kernels' OpenMP threads.
    """
    restore = []
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""),
                               ("openblas", "64_"), ("openblas", "")):
            setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                restore.append((setter, int(getter())))
                setter(ctypes.c_int(1))
                break
    try:
        yield
    finally:
        for setter, count in restore:
            setter(ctypes.c_int(count))


class _Clock:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


# ----------------------------------------------------------------------------------------------
# translate

def _encode_pairs(pairs, src_vocab: data.Vocab, tgt_vocab: data.Vocab, eos: int):
    src, _ = data.pad_batch([src_vocab[list(s)] for s, _ in pairs], pad_id=0)
    tgt, _ = data.pad_batch([tgt_vocab[list(t)] + [eos] for _, t in pairs], pad_id=0)
    return src, tgt


def _scores(predictions: list[str], references: list[str]) -> tuple[float, float, float]:
    """Exact-match rate, corpus BLEU-4 and mean d2l BLEU (k=2), all over characters."""
    exact = float(np.mean([p == r for p, r in zip(predictions, references)]))
    corpus = metrics.corpus_bleu([list(p) for p in predictions], [list(r) for r in references])
    sentence = float(np.mean([metrics.bleu(list(p), list(r), k=2) if p else 0.0
                              for p, r in zip(predictions, references)]))
    return exact, corpus, sentence


def _plot_losses(path: str, batch_losses: list[float], epoch_losses: list[float],
                 title: str) -> None:
    """The loss of every batch and the mean of every epoch, log scale, to ``path``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise SystemExit(f"--plot needs matplotlib: pip install \"rnnfast[demo]\" ({err})") from err
    per_epoch = len(batch_losses) // max(len(epoch_losses), 1)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(np.arange(1, len(batch_losses) + 1), batch_losses, lw=0.8, alpha=0.6,
            label="batch")
    ax.plot(per_epoch * (np.arange(len(epoch_losses)) + 0.5), epoch_losses, "o-",
            label="epoch mean (at mid-epoch)")
    ax.set_yscale("log")
    ax.set_xlabel(f"training step ({per_epoch} per epoch)")
    ax.set_ylabel("cross-entropy per target token")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120)


def translate(args: argparse.Namespace) -> int:
    clock = _Clock()
    pairs = data.date_pairs(args.train_size + args.test_size, seed=args.seed)
    train, test = pairs[:args.train_size], pairs[args.train_size:]
    src_vocab = data.Vocab([list(s) for s, _ in train])
    tgt_vocab = data.Vocab([list(t) for _, t in train])
    eos = tgt_vocab["<eos>"]
    src_train, tgt_train = _encode_pairs(train, src_vocab, tgt_vocab, eos)
    src_test, _ = _encode_pairs(test, src_vocab, tgt_vocab, eos)
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), embed_size=args.embed_size,
                    hidden_size=args.hidden_size, num_layers=args.layers, cell=args.cell,
                    dropout=args.dropout, pad_id=tgt_vocab["<pad>"], bos_id=tgt_vocab["<bos>"],
                    eos_id=eos, seed=args.seed)
    n_params = sum(p.size for p in model.parameters().values())
    print(f"Date normalisation: {len(train)} training pairs, {len(test)} held out, e.g. "
          f"{train[0][0]!r} -> {train[0][1]!r}")
    print(f"Model: {args.layers}-layer {args.cell.upper()} encoder-decoder, embed "
          f"{args.embed_size}, hidden {args.hidden_size}, {n_params:,} parameters; "
          f"{get_num_threads()} kernel thread(s)\n")

    def report(epoch: int, loss: float) -> None:
        _write(f"epoch {epoch:2d}/{args.epochs}  loss {loss:.4f}  ({clock():.0f} s)")

    batch_losses: list[float] = []
    history = model.fit(src_train, tgt_train, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, clip=args.clip, progress=args.progress, callback=report,
                        batch_callback=lambda step, loss: batch_losses.append(loss))
    trained = clock()

    references = [t for _, t in test]
    max_len = max(len(t) for t in references) + 1
    decoded = {}
    for label, beam in (("greedy", 1), (f"beam {args.beam_size}", args.beam_size)):
        ids = model.predict(src_test, max_len=max_len, beam_size=beam,
                            length_penalty=args.length_penalty)
        decoded[label] = ["".join(tgt_vocab.to_tokens(p)) for p in ids]
    print(f"\nHeld-out pairs ({len(test)}), scored on characters:")
    print(f"  {'decoder':<34} {'exact match':>11} {'corpus BLEU-4':>14} {'mean BLEU (k=2)':>16}")
    for label, predictions in decoded.items():
        if label != "greedy":
            label += f" (length penalty {args.length_penalty:g})"
        exact, corpus, sentence = _scores(predictions, references)
        print(f"  {label:<34} {100 * exact:10.1f}% {corpus:14.4f} {sentence:16.4f}")

    greedy, beam = decoded.values()
    wrong = [i for i in range(len(test)) if greedy[i] != references[i] or beam[i] != references[i]]
    shown = list(range(min(args.samples, len(test)))) + [i for i in wrong if i >= args.samples][:4]
    width = max(len(test[i][0]) for i in shown) + 2
    print(f"\nSample translations (greedy vs beam {args.beam_size}):")
    print(f"  {'source':<{width}} {'greedy':<12} {'beam':<12} {'reference':<12}")
    for i in shown:
        mark = "ok" if greedy[i] == beam[i] == references[i] else "MISS"
        print(f"  {test[i][0]!r:<{width}} {greedy[i]:<12} {beam[i]:<12} {references[i]:<12} {mark}")
    print(f"\nTrained in {trained:.0f} s ({args.epochs} epochs); total {clock():.0f} s.")
    if args.plot:
        _plot_losses(args.plot, batch_losses, history, f"rnnfast Seq2Seq on dates: "
                     f"{args.layers}-layer {args.cell.upper()}, hidden {args.hidden_size}")
        print(f"Loss curve written to {args.plot}")
    return 0


# ----------------------------------------------------------------------------------------------
# A token tagger: embedding -> recurrent layer -> dense, one prediction per step (charlm, parity).

class _Tagger(_Composite):
    """ids [B, T] -> class logits [T, B, C] at every step, trained on the mean cross-entropy."""

    def __init__(self, num_tokens: int, num_classes: int, embed_size: int, hidden_size: int,
                 num_layers: int, cell: str, seed: int):
        seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(3)]
        self._modules = {"embedding": Embedding(num_tokens, embed_size, seed=seeds[0]),
                         "rnn": _CELLS[cell](embed_size, hidden_size, num_layers, seed=seeds[1]),
                         "output": Linear(hidden_size, num_classes, seed=seeds[2])}
        self._train(False)

    def forward(self, ids: np.ndarray, state: Any = None):
        """ids [B, T] -> logits [T, B, C] and the final state."""
        p = self._modules
        y, state = p["rnn"](p["embedding"](ids.T), state)
        return p["output"](y), state

    def loss(self, ids: np.ndarray, targets: np.ndarray, backward: bool = False) -> float:
        """Mean cross-entropy per step of ids [B, T] against targets [B, T]."""
        self._train(backward)
        try:
            logits, _ = self.forward(ids)
            loss, grad = softmax_cross_entropy(logits, targets.T)
            if backward:
                p = self._modules
                dx, _ = p["rnn"].backward(p["output"].backward(grad))
                p["embedding"].backward(dx)
        finally:
            self._train(False)
        return loss


def _sample(model: _Tagger, vocab: data.Vocab, prompt: str, length: int, temperature: float,
            rng: np.random.Generator) -> str:
    """Continue ``prompt`` by ``length`` characters, one at a time (T = 1 steps with the state)."""
    logits, state = model.forward(np.array([vocab[list(prompt)]]))
    out = []
    for _ in range(length):
        p = np.exp(log_softmax(logits[-1, 0].astype(np.float64) / temperature))
        p[vocab.unk] = 0.0  # never in the text: not worth showing
        token = int(rng.choice(len(p), p=p / p.sum()))
        out.append(vocab.to_tokens(token))
        logits, state = model.forward(np.array([[token]]), state)
    return (prompt + "".join(out)).replace("\n", " / ")


def charlm(args: argparse.Namespace) -> int:
    clock = _Clock()
    text = data.charlm_text(args.sentences, seed=args.seed)
    vocab = data.Vocab(list(text), reserved=())
    ids = np.array(vocab[list(text)], dtype=np.int64)
    model = _Tagger(len(vocab), len(vocab), args.embed_size, args.hidden_size, args.layers,
                    args.cell, args.seed)
    print(f"Character language model: {len(text):,} characters of generated text "
          f"({args.sentences} sentences), {len(vocab)} distinct characters, e.g.\n  "
          f"{text.splitlines()[0]}")
    print(f"Model: {args.layers}-layer {args.cell.upper()}, hidden {args.hidden_size}; windows of "
          f"{args.seq_len} characters, {args.batch_size} per batch; {get_num_threads()} kernel "
          f"thread(s)\n")
    rng = np.random.default_rng(args.seed)
    sample_rng = np.random.default_rng(args.seed + 1)
    window = np.arange(args.seq_len + 1)

    def epoch_batches():
        for _ in range(args.batches):
            starts = rng.integers(0, len(ids) - args.seq_len - 1, size=args.batch_size)
            chunk = ids[starts[:, None] + window]
            yield (chunk[:, :-1], chunk[:, 1:]), float(chunk[:, 1:].size)

    def report(epoch: int, loss: float) -> None:
        sample = _sample(model, vocab, args.prompt, args.sample_len, args.temperature, sample_rng)
        _write(f"epoch {epoch:2d}/{args.epochs}  loss {loss:.3f}  perplexity {np.exp(loss):6.2f}  "
               f"({clock():.0f} s)\n  {sample!r}")

    before = _sample(model, vocab, args.prompt, args.sample_len, args.temperature, sample_rng)
    print(f"before training\n  {before!r}")
    train_loop(model, epoch_batches, args.batches, epochs=args.epochs, lr=args.lr,
               optimizer="adam", clip=args.clip, progress=args.progress, callback=report)
    print(f"\nFinal samples (temperature {args.temperature:g}):")
    for _ in range(3):
        print("  " + _sample(model, vocab, args.prompt, args.sample_len, args.temperature,
                             sample_rng))
    print(f"\nTotal {clock():.0f} s.")
    return 0


# ----------------------------------------------------------------------------------------------
# parity

def _parity_accuracy(model: _Tagger, length: int, n: int, seed: int) -> tuple[float, float]:
    """Per-bit and whole-string accuracy on n fresh strings of ``length`` bits."""
    bits, parity = data.parity_data(n, length, seed=seed)
    logits, _ = model.forward(bits)
    correct = parity == logits.argmax(axis=-1).T
    return float(correct.mean()), float(correct.all(axis=1).mean())


def parity(args: argparse.Namespace) -> int:
    clock = _Clock()
    bits, targets = data.parity_data(args.train_size, args.length, seed=args.seed)
    model = _Tagger(2, 2, args.embed_size, args.hidden_size, args.layers, args.cell, args.seed)
    print(f"Parity: {args.train_size} random strings of {args.length} bits; the target at step t "
          f"is the XOR of bits 0..t, e.g.\n  bits   {''.join(map(str, bits[0]))}\n"
          f"  parity {''.join(map(str, targets[0]))}")
    print(f"Model: {args.layers}-layer {args.cell.upper()}, hidden {args.hidden_size}; "
          f"{get_num_threads()} kernel thread(s)\n")
    rng = np.random.default_rng(args.seed)

    def epoch_batches():
        for x, y in data.minibatches(bits, targets, batch_size=args.batch_size, seed=rng):
            yield (x, y), float(y.size)

    def report(epoch: int, loss: float) -> None:
        per_bit, whole = _parity_accuracy(model, args.length, 500, args.seed + 1)
        _write(f"epoch {epoch:2d}/{args.epochs}  loss {loss:.4f}  held-out accuracy: bits "
               f"{100 * per_bit:5.1f}%, whole strings {100 * whole:5.1f}%  ({clock():.0f} s)")

    train_loop(model, epoch_batches, -(-args.train_size // args.batch_size), epochs=args.epochs,
               lr=args.lr, optimizer="adam", clip=args.clip, progress=args.progress,
               callback=report)
    print(f"\nHeld-out strings (1000 each), trained on length {args.length}:")
    print(f"  {'length':>6} {'bits correct':>13} {'strings all correct':>20}")
    for k, length in enumerate([args.length] + args.test_lengths):
        per_bit, whole = _parity_accuracy(model, length, 1000, args.seed + 2 + k)
        print(f"  {length:6d} {100 * per_bit:12.1f}% {100 * whole:19.1f}%")
    print(f"\nTotal {clock():.0f} s.")
    return 0


# ----------------------------------------------------------------------------------------------
# The command line.

def _write(line: str) -> None:
    """Print above a tqdm bar when there is one."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        print(line, flush=True)
    else:
        tqdm.write(line)


def _run(func):
    def run(args: argparse.Namespace) -> int:
        previous = get_num_threads()
        set_num_threads(args.threads)
        try:
            with _single_threaded_blas():
                return func(args)
        finally:
            set_num_threads(previous)
    return run


def _common(p: argparse.ArgumentParser, func, **defaults) -> None:
    p.add_argument("--epochs", type=int, default=defaults["epochs"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"], help="Adam's learning rate")
    p.add_argument("--clip", type=float, default=1.0, help="largest gradient norm (0: off)")
    p.add_argument("--embed-size", type=int, default=defaults["embed_size"])
    p.add_argument("--hidden-size", type=int, default=defaults["hidden_size"])
    p.add_argument("--layers", type=int, default=defaults["layers"])
    p.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="threads of the rnnfast kernels")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    p.set_defaults(func=_run(func))


def add_demo_parser(sub: Any) -> None:
    """Register ``demo`` and its sub-commands on the CLI's sub-parsers."""
    demo = sub.add_parser("demo", help="train and show a model: translate, charlm, parity")
    demos = demo.add_subparsers(dest="demo", required=True)

    p = demos.add_parser("translate", help="a Seq2Seq translating written dates to ISO 8601")
    p.add_argument("--train-size", type=int, default=16000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--length-penalty", type=float, default=0.75)
    p.add_argument("--samples", type=int, default=8, help="sample translations shown")
    p.add_argument("--plot", metavar="FILE.png", help="draw the loss curve to this file")
    _common(p, translate, epochs=3, batch_size=64, lr=0.005, embed_size=32, hidden_size=128,
            layers=2)

    p = demos.add_parser("charlm", help="a character-level language model, sampled as it learns")
    p.add_argument("--sentences", type=int, default=3000, help="size of the generated text")
    p.add_argument("--batches", type=int, default=50, help="batches per epoch")
    p.add_argument("--seq-len", type=int, default=64, help="characters per training window")
    p.add_argument("--prompt", default="The ")
    p.add_argument("--sample-len", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.6)
    _common(p, charlm, epochs=12, batch_size=32, lr=0.005, embed_size=32, hidden_size=256,
            layers=1)

    p = demos.add_parser("parity", help="running XOR of a bit string, tested on longer strings")
    p.add_argument("--length", type=int, default=20, help="bits per training string")
    p.add_argument("--train-size", type=int, default=4000)
    p.add_argument("--test-lengths", type=int, nargs="*", default=[50, 200])
    _common(p, parity, epochs=10, batch_size=64, lr=0.01, embed_size=8, hidden_size=32,
            layers=1)
