"""An RNN encoder-decoder for sequence-to-sequence learning, trained and decoded in NumPy.

The architecture is the one taught for machine translation (d2l, "Sequence to Sequence Learning"):

- encoder: an embedding and a multi-layer GRU or LSTM over the source; the source lengths are read
  from the padding and passed to the layer, so padding never changes a result;
- decoder: an embedding of the previous target token concatenated, at every step, with the
  *context* (the encoder's top-layer final hidden state), a multi-layer GRU or LSTM of the same
  shape that starts from the encoder's final state, and a dense layer to the target vocabulary;
- training: teacher forcing (the decoder reads ``<bos>`` + tgt[:-1]) and a softmax cross-entropy
  masked on padding, the mean over the target tokens of a batch;
- decoding: greedy or beam search, every hypothesis of every source advanced together, one
  T = 1 call of the decoder's kernels per step.

Shapes: N sequences, S source steps, T target steps, E = embed_size, H = hidden_size, V the target
vocabulary. Token arrays are [N, S] / [N, T] (row = sequence) as a user holds them; inside, the
layers run time-major ([S, N, E]).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np

from . import optim
from ._io import load_npz, save_npz
from .data import minibatches
from .layers import GRU, LSTM
from .losses import log_softmax, softmax_cross_entropy
from .nn import Embedding, Linear, _Composite, as_ids

__all__ = ["Seq2Seq"]

_CELLS = {"gru": GRU, "lstm": LSTM}
_FILE_VERSION = 1


def _progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar when ``enabled`` and tqdm is installed; otherwise an object that does nothing."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # tqdm is optional: no bar, same results
            pass
        else:
            return tqdm(total=total, desc=desc, unit="batch", dynamic_ncols=True)

    class _Silent:
        def update(self, n=1):
            pass

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

    return _Silent()


def train_loop(model: Any, epoch_batches: Callable[[], Iterable[tuple[tuple, float]]],
               batches_per_epoch: int, *, epochs: int, lr: float, optimizer: str,
               clip: float | None, progress: bool,
               callback: Callable[[int, float], Any] | None = None,
               batch_callback: Callable[[int, float], Any] | None = None) -> list[float]:
    """Minibatch training of any model with ``zero_grad()``, ``parameters()``, ``grads`` and
    ``loss(*batch, backward=True) -> float`` (a mean over the batch's ``weight`` items).

    ``epoch_batches()`` yields (batch, weight) pairs for one epoch. Each step: zero the gradients,
    forward and backward, clip the gradient norm to ``clip`` (None or 0: no clipping), one
    optimiser step. Returns the weighted mean loss of every epoch; ``callback(epoch, loss)`` is
    called after each (epochs counted from 1), ``batch_callback(step, loss)`` after every step.
    """
    if not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs: expected an integer >= 0, got {epochs!r}")
    opt = optim.create(optimizer, model.parameters(), lr)
    history: list[float] = []
    step = 0
    bar = _progress_bar(epochs * batches_per_epoch, progress, "training")
    try:
        for epoch in range(1, epochs + 1):
            total = weight = 0.0
            for batch, w in epoch_batches():
                model.zero_grad()
                loss = model.loss(*batch, backward=True)
                if clip:
                    optim.clip_grad_norm(model.grads, clip)
                opt.step(model.grads)
                total, weight = total + loss * w, weight + w
                step += 1
                if batch_callback is not None:
                    batch_callback(step, loss)
                bar.update()
                bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.4f}", refresh=False)
            history.append(total / max(weight, 1.0))
            if callback is not None:
                callback(epoch, history[-1])
    finally:
        bar.close()
    return history


class Seq2Seq(_Composite):
    """RNN encoder-decoder (see the module docstring for the architecture).

    Parameters
    ----------
    src_vocab_size, tgt_vocab_size : int, the number of source and target token ids
    embed_size : int, E, the size of both embeddings
    hidden_size : int, H, of every recurrent layer (encoder and decoder)
    num_layers : int, of the encoder and of the decoder
    cell : "gru" or "lstm"
    dropout : float, between stacked recurrent layers, in training only
    pad_id, bos_id, eos_id : int, the target ids of padding, begin and end of sequence (pad_id
        pads the sources too)
    dtype : float32 or float64
    seed : int or None, the initial weights and the training order

    Parameters are named ``<part>.<name>``, parts ``encoder_embedding``, ``encoder``,
    ``decoder_embedding``, ``decoder`` (the layers' PyTorch names) and ``output``
    (``weight``, ``bias``): ``parameters()``, ``grads``, ``zero_grad()``, ``state_dict()`` and
    ``load_state_dict()`` work as the layers' do.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, embed_size: int = 32,
                 hidden_size: int = 64, num_layers: int = 2, cell: str = "gru",
                 dropout: float = 0.0, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2,
                 dtype: Any = np.float32, seed: int | None = None):
        if cell not in _CELLS:
            raise ValueError(f"cell: expected one of {tuple(_CELLS)}, got {cell!r}")
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if not isinstance(value, (int, np.integer)) or not 0 <= value < tgt_vocab_size:
                raise ValueError(f"{name}: expected an id in [0, tgt_vocab_size = "
                                 f"{tgt_vocab_size}), got {value!r}")
        if len({pad_id, bos_id, eos_id}) != 3:
            raise ValueError(f"pad_id, bos_id, eos_id: expected three different ids, got "
                             f"{pad_id}, {bos_id}, {eos_id}")
        if not isinstance(pad_id, (int, np.integer)) or not 0 <= pad_id < src_vocab_size:
            raise ValueError(f"pad_id: expected an id in [0, src_vocab_size = {src_vocab_size}), "
                             f"got {pad_id!r}")
        self.config = {
            "src_vocab_size": int(src_vocab_size), "tgt_vocab_size": int(tgt_vocab_size),
            "embed_size": int(embed_size), "hidden_size": int(hidden_size),
            "num_layers": int(num_layers), "cell": cell, "dropout": float(dropout),
            "pad_id": int(pad_id), "bos_id": int(bos_id), "eos_id": int(eos_id),
            "dtype": np.dtype(dtype).name,
        }
        self.pad_id, self.bos_id, self.eos_id = int(pad_id), int(bos_id), int(eos_id)
        self.embed_size, self.hidden_size, self.cell = int(embed_size), int(hidden_size), cell
        self.dtype = np.dtype(dtype)
        seeds = [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(6)]
        layer = _CELLS[cell]
        E, H = self.embed_size, self.hidden_size
        self.encoder_embedding = Embedding(src_vocab_size, E, dtype=dtype, seed=seeds[0])
        self.encoder = layer(E, H, num_layers, dropout=dropout, dtype=dtype, seed=seeds[1])
        self.decoder_embedding = Embedding(tgt_vocab_size, E, dtype=dtype, seed=seeds[2])
        self.decoder = layer(E + H, H, num_layers, dropout=dropout, dtype=dtype, seed=seeds[3])
        self.output = Linear(H, tgt_vocab_size, dtype=dtype, seed=seeds[4])
        self._modules = {"encoder_embedding": self.encoder_embedding, "encoder": self.encoder,
                         "decoder_embedding": self.decoder_embedding, "decoder": self.decoder,
                         "output": self.output}
        self._order_rng = np.random.default_rng(seeds[5])
        self._train(False)

    # -- token arrays --------------------------------------------------------------------------
    def _tokens(self, name: str, ids: Any, vocab_size: int) -> np.ndarray:
        a = as_ids(name, ids, vocab_size)
        if a.ndim != 2 or 0 in a.shape:
            raise ValueError(f"{name}: expected a non-empty 2-D array (N, steps) of ids, got shape "
                             f"{a.shape}")
        return a

    def _lengths(self, name: str, ids: np.ndarray) -> np.ndarray:
        """The number of tokens before the padding in each row; padding must be trailing."""
        filled = ids != self.pad_id
        lengths = filled.sum(axis=1)
        trailing = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        if not np.array_equal(filled, trailing):
            row = int(np.flatnonzero((filled != trailing).any(axis=1))[0])
            raise ValueError(f"{name}: row {row} has a token after pad_id = {self.pad_id}; "
                             "padding must come last")
        return lengths

    def _sources(self, src: Any) -> tuple[np.ndarray, np.ndarray]:
        """src as ids [N, S'] cut to its longest row, and the row lengths [N] (all >= 1)."""
        src = self._tokens("src", src, self.config["src_vocab_size"])
        lengths = self._lengths("src", src)
        if lengths.min() == 0:
            raise ValueError(f"src: row {int(np.argmin(lengths))} is empty (only padding)")
        return src[:, :lengths.max()], lengths

    def _targets(self, tgt: Any, n: int) -> np.ndarray:
        tgt = self._tokens("tgt", tgt, self.config["tgt_vocab_size"])
        if tgt.shape[0] != n:
            raise ValueError(f"tgt: expected {n} rows like src, got {tgt.shape[0]}")
        return tgt

    def _training_target_lengths(self, tgt: np.ndarray) -> np.ndarray:
        """The lengths of training targets, each row checked to end with eos before its padding."""
        lengths = self._lengths("tgt", tgt)
        last = tgt[np.arange(len(tgt)), np.maximum(lengths - 1, 0)]  # pad for an empty row
        if np.any(last != self.eos_id):
            raise ValueError(f"tgt: row {int(np.flatnonzero(last != self.eos_id)[0])} does not end "
                             f"with eos_id = {self.eos_id} before its padding")
        return lengths

    def _teacher_inputs(self, tgt: np.ndarray) -> np.ndarray:
        """[T, N]: <bos> then tgt[:, :-1], time-major."""
        return np.concatenate([np.full((tgt.shape[0], 1), self.bos_id), tgt[:, :-1]], axis=1).T

    # -- the network ---------------------------------------------------------------------------
    def _encode(self, src: np.ndarray, lengths: np.ndarray):
        """Return the encoder's final state (h [L, N, H], or (h, c)) and the context [N, H]."""
        _, state = self.encoder(self.encoder_embedding(src.T), None, lengths)
        h = state[0] if isinstance(state, tuple) else state
        return state, h[-1]

    def _decode(self, inputs: np.ndarray, state: Any, context: np.ndarray):
        """The decoder over inputs [T, N] from ``state``: logits [T, N, V] and the final state."""
        e = self.decoder_embedding(inputs)
        x = np.concatenate([e, np.broadcast_to(context, (len(inputs),) + context.shape)], axis=-1)
        y, state = self.decoder(x, state)
        return self.output(y), state

    def _backward(self, grad_logits: np.ndarray, src_steps: int) -> None:
        """Backpropagate from d loss / d logits [T, N, V] to every parameter."""
        dx, dstate = self.decoder.backward(self.output.backward(grad_logits))
        E = self.embed_size
        self.decoder_embedding.backward(dx[..., :E])
        dcontext = dx[..., E:].sum(axis=0)
        dh = (dstate[0] if isinstance(dstate, tuple) else dstate).copy()
        dh[-1] += dcontext  # the context is the encoder's top-layer final h
        dstate = (dh,) + tuple(dstate[1:]) if isinstance(dstate, tuple) else dh
        N = dcontext.shape[0]
        grad_output = np.zeros((src_steps, N, self.hidden_size), self.dtype)
        dx_enc, _ = self.encoder.backward(grad_output, dstate)
        self.encoder_embedding.backward(dx_enc)

    # -- training ------------------------------------------------------------------------------
    def loss(self, src: Any, tgt: Any, backward: bool = False) -> float:
        """Mean masked cross-entropy per target token of a batch under teacher forcing.

        Parameters
        ----------
        src : ints [N, S], padded with pad_id
        tgt : ints [N, T], each row ending with eos_id before its padding
        backward : False: an evaluation-mode forward (no dropout). True: a training-mode forward,
            then the gradients are *added* to ``grads`` (call ``zero_grad()`` first).
        """
        src, src_lengths = self._sources(src)
        tgt = self._targets(tgt, len(src))
        tgt_lengths = self._training_target_lengths(tgt)
        tgt = tgt[:, :tgt_lengths.max()]
        self._train(backward)
        try:
            state, context = self._encode(src, src_lengths)
            logits, _ = self._decode(self._teacher_inputs(tgt), state, context)
            mask = np.arange(tgt.shape[1])[:, None] < tgt_lengths[None, :]
            loss, grad_logits = softmax_cross_entropy(logits, tgt.T, mask)
            if backward:
                self._backward(grad_logits, src.shape[1])
        finally:
            self._train(False)
        return loss

    def fit(self, src: Any, tgt: Any, epochs: int = 10, batch_size: int = 64, lr: float = 0.005,
            optimizer: str = "adam", clip: float | None = 1.0, progress: bool = True,
            callback: Callable[[int, float], Any] | None = None,
            batch_callback: Callable[[int, float], Any] | None = None) -> list[float]:
        """Train on (src, tgt) pairs with teacher forcing.

        Parameters
        ----------
        src : ints [N, S], padded with pad_id
        tgt : ints [N, T], each row ending with eos_id before its padding
        epochs, batch_size : int; every epoch visits the pairs in a new order drawn from the seed
        lr : float, learning rate
        optimizer : "adam" or "sgd" (momentum 0.9); each call starts a fresh optimiser
        clip : float or None, the largest global L2 norm of the gradient
        progress : bool, show a tqdm progress bar (if tqdm is installed)
        callback : None or ``callback(epoch, mean_loss)``, called after each epoch
        batch_callback : None or ``batch_callback(step, batch_loss)``, called after each step

        Returns
        -------
        history : list of float, the mean training loss per target token of each epoch
        """
        src = self._sources(src)[0]  # checked once here, not halfway through training
        tgt = self._targets(tgt, len(src))
        self._training_target_lengths(tgt)
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")

        def epoch_batches():
            for s, t in minibatches(src, tgt, batch_size=batch_size, seed=self._order_rng):
                yield (s, t), float(np.count_nonzero(t != self.pad_id))

        return train_loop(self, epoch_batches, -(-len(src) // batch_size), epochs=epochs, lr=lr,
                          optimizer=optimizer, clip=clip, progress=progress, callback=callback,
                          batch_callback=batch_callback)

    # -- scoring and decoding ------------------------------------------------------------------
    def log_prob(self, src: Any, tgt: Any, tgt_lengths: Any = None) -> np.ndarray:
        """Log-probability of target sequences given their sources (evaluation mode).

        Parameters
        ----------
        src : ints [N, S], padded with pad_id
        tgt : ints [N, T]
        tgt_lengths : None (each row's tokens before its padding), or ints [N] in [0, T]

        Returns
        -------
        float64 [N], ``sum_{t < tgt_lengths[n]} log p(tgt[n, t] | src[n], tgt[n, :t])``
        """
        src, src_lengths = self._sources(src)
        tgt = self._targets(tgt, len(src))
        if tgt_lengths is None:
            lengths = self._lengths("tgt", tgt)
        else:
            lengths = as_ids("tgt_lengths", tgt_lengths)
            if lengths.shape != (len(tgt),) or lengths.min() < 0 or lengths.max() > tgt.shape[1]:
                raise ValueError(f"tgt_lengths: expected {len(tgt)} values in [0, {tgt.shape[1]}], "
                                 f"got shape {lengths.shape} and values {lengths.tolist()[:8]}")
        steps = int(lengths.max())
        if steps == 0:
            return np.zeros(len(tgt))
        tgt = tgt[:, :steps]
        state, context = self._encode(src, src_lengths)
        logits, _ = self._decode(self._teacher_inputs(tgt), state, context)
        logp = np.take_along_axis(log_softmax(logits), tgt.T[..., None], axis=-1)[..., 0]
        mask = np.arange(steps)[:, None] < lengths[None, :]
        return np.where(mask, logp, 0).astype(np.float64).sum(axis=0)

    def predict(self, src: Any, max_len: int = 20, beam_size: int = 1,
                length_penalty: float = 0.75) -> list[list[int]]:
        """Translate: the best target of each source, without <bos> and <eos>.

        Beam search keeps, at every step, the ``beam_size`` best hypotheses by total
        log-probability among all one-token extensions of the live ones; a hypothesis ends when it
        emits eos_id or has ``max_len`` tokens, and leaves the beam. The answer is the ended
        hypothesis with the highest ``log P / L ** length_penalty``, L its number of tokens
        including eos. ``beam_size=1`` is greedy decoding; a beam as wide as the number of
        possible prefixes is exhaustive search over that score. Ties go to the lower token id.

        Parameters
        ----------
        src : ints [N, S], padded with pad_id
        max_len : int, the most tokens generated (eos included)
        beam_size : int
        length_penalty : float, alpha above (0: no normalisation)

        Returns
        -------
        N lists of target ids
        """
        if not isinstance(max_len, (int, np.integer)) or max_len < 1:
            raise ValueError(f"max_len: expected an integer >= 1, got {max_len!r}")
        if not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
            raise ValueError(f"beam_size: expected an integer >= 1, got {beam_size!r}")
        src, src_lengths = self._sources(src)
        state, context = self._encode(src, src_lengths)
        return self._beam_search(state, context, int(max_len), int(beam_size),
                                 float(length_penalty))

    def _beam_search(self, state: Any, context: np.ndarray, max_len: int, K: int,
                     alpha: float) -> list[list[int]]:
        """Beam search over N sources at once: N x K slots, those alive advanced by one batched
        decoder step per time step."""
        N, V = len(context), self.config["tgt_vocab_size"]
        parts = state if isinstance(state, tuple) else (state,)
        slots = [np.repeat(s, K, axis=1) for s in parts]  # [L, N*K, H] each; slot n*K + k
        context = np.repeat(context, K, axis=0)
        scores = np.full((N, K), -np.inf)  # total log P of each live slot; -inf: empty slot
        scores[:, 0] = 0.0
        history = np.zeros((N, K, 0), np.int64)  # tokens of each slot's hypothesis
        last = np.full(N * K, self.bos_id)
        best_score = np.full(N, -np.inf)
        best: list[list[int]] = [[] for _ in range(N)]
        rows = np.arange(N)
        for t in range(max_len):
            alive = np.flatnonzero(np.isfinite(scores.ravel()))
            if alive.size == 0:
                break
            step_state = tuple(s[:, alive] for s in slots)
            logits, new_state = self._decode(last[alive][None], step_state if len(parts) > 1
                                             else step_state[0], context[alive])
            logp = np.full((N * K, V), -np.inf)
            logp[alive] = log_softmax(logits[0])
            for s, new in zip(slots, new_state if len(parts) > 1 else (new_state,)):
                s[:, alive] = new
            candidates = (scores.reshape(N * K, 1) + logp).reshape(N, K * V)
            chosen = np.argsort(-candidates, axis=1, kind="stable")[:, :K]
            top = np.take_along_axis(candidates, chosen, axis=1)
            parent, token = chosen // V, chosen % V
            history = np.concatenate([np.take_along_axis(history, parent[..., None], axis=1),
                                      token[..., None]], axis=2)
            live = np.isfinite(top)
            ended = live & ((token == self.eos_id) | (t + 1 == max_len))
            normalised = np.where(ended, top / (t + 1) ** alpha, -np.inf)
            k_best = normalised.argmax(axis=1)
            better = normalised[rows, k_best] > best_score
            for n in np.flatnonzero(better):
                best_score[n] = normalised[n, k_best[n]]
                seq = history[n, k_best[n]]
                best[n] = seq[:-1].tolist() if seq[-1] == self.eos_id else seq.tolist()
            scores = np.where(live & ~ended, top, -np.inf)
            source_slot = (rows[:, None] * K + parent).ravel()
            slots = [s[:, source_slot] for s in slots]
            last = token.ravel()
        return best

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: Any) -> None:
        """Write the configuration and every parameter to ``path`` (.npz, nothing pickled)."""
        save_npz(path, type(self).__name__, _FILE_VERSION, self.config, self.parameters())

    @classmethod
    def load(cls, path: Any) -> Seq2Seq:
        """A model from a file written by ``save``. Anything else (another kind of file, truncated,
        corrupt, inconsistent) raises ValueError naming the file; a missing file stays
        FileNotFoundError. Nothing in the file is executed (no pickle)."""
        config, params = load_npz(path, cls.__name__, _FILE_VERSION)
        expected = set(inspect.signature(cls).parameters) - {"seed"}
        if set(config) != expected:
            raise ValueError(f"{path}: configuration keys {sorted(config)}, expected "
                             f"{sorted(expected)}")
        try:
            model = cls(**config, seed=0)
            missing = sorted(set(model.parameters()) - set(params))
            if missing:
                raise KeyError(f"missing parameters {missing}")
            model.load_state_dict(params)
        except (TypeError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a valid {cls.__name__} file ({err})") from err
        return model

    def __repr__(self) -> str:
        c = self.config
        return (f"Seq2Seq({c['src_vocab_size']} -> {c['tgt_vocab_size']}, cell={c['cell']!r}, "
                f"embed_size={c['embed_size']}, hidden_size={c['hidden_size']}, "
                f"num_layers={c['num_layers']}, dtype={c['dtype']})")
