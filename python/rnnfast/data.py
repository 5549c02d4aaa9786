"""Vocabularies, padding, minibatches, and the datasets the package generates itself.

Nothing is downloaded: the three tasks of the demos are written by code, from a seed.

- ``date_pairs``: human-written dates in many styles ("the 3rd of March 1997",
  "Tue, Mar 4, 1997", "04.03.1997", ...) paired with their ISO form ``1997-03-04``, a translation
  task for a sequence-to-sequence model;
- ``parity_data``: bit strings and their running XOR, the classic test of a recurrent memory;
- ``charlm_text``: English-like text from a small grammar, for a character-level language model.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Vocab",
    "charlm_text",
    "date_pairs",
    "minibatches",
    "pad_batch",
    "parity_data",
]


class Vocab:
    """A token <-> id mapping.

    Ids: the ``reserved`` tokens first (by default ``<pad>`` 0, ``<bos>`` 1, ``<eos>`` 2, which are
    ``rnnfast.Seq2Seq``'s default ids), then ``<unk>`` (unless reserved already), then every token
    seen at least ``min_freq`` times, most frequent first (ties in alphabetical order).

    Parameters
    ----------
    tokens : an iterable of tokens, or of sequences of tokens (a list of sentences; a string is one
        token)
    min_freq : int, tokens seen fewer times map to ``<unk>``
    reserved : the tokens that get the first ids

    ``vocab[token]`` is its id (``<unk>``'s for an unknown token) and ``vocab[list_of_tokens]`` a
    list of ids; ``vocab.to_tokens(ids)`` goes back; ``len(vocab)`` is the number of ids.
    """

    UNK = "<unk>"

    def __init__(self, tokens: Iterable[Any] = (), min_freq: int = 0,
                 reserved: Sequence[str] = ("<pad>", "<bos>", "<eos>")):
        if len(set(reserved)) != len(reserved):
            raise ValueError(f"reserved: expected distinct tokens, got {tuple(reserved)!r}")
        counts: collections.Counter = collections.Counter()
        for item in tokens:
            if isinstance(item, (list, tuple)):
                counts.update(item)
            else:
                counts[item] += 1
        specials = list(reserved) + ([] if self.UNK in reserved else [self.UNK])
        seen = set(specials)
        frequent = sorted((t for t, n in counts.items() if n >= min_freq and t not in seen),
                          key=lambda t: (-counts[t], str(t)))
        self.idx_to_token: list[Any] = specials + frequent
        self.token_to_idx: dict[Any, int] = {t: i for i, t in enumerate(self.idx_to_token)}
        self.token_freqs: dict[Any, int] = dict(counts)

    @property
    def unk(self) -> int:
        """The id of ``<unk>``."""
        return self.token_to_idx[self.UNK]

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __contains__(self, token: Any) -> bool:
        return token in self.token_to_idx

    def __getitem__(self, tokens: Any) -> Any:
        if isinstance(tokens, (list, tuple)):
            return [self[t] for t in tokens]
        return self.token_to_idx.get(tokens, self.unk)

    def to_tokens(self, ids: Any) -> Any:
        """An id -> its token; a sequence (or array) of ids -> a list of tokens."""
        if isinstance(ids, (list, tuple, np.ndarray)):
            return [self.to_tokens(int(i)) for i in ids]
        if not 0 <= ids < len(self):
            raise IndexError(f"ids: expected ids in [0, {len(self)}), got {ids}")
        return self.idx_to_token[ids]

    def __repr__(self) -> str:
        more = "..." if len(self) > 8 else ""
        return f"Vocab({len(self)} tokens: {self.idx_to_token[:8]!r}{more})"


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int,
              max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of ids as one padded array.

    Parameters
    ----------
    seqs : N sequences of ints
    pad_id : int, the padding value
    max_len : None (the longest sequence's length), or the width: longer sequences are truncated

    Returns
    -------
    ids : int64 [N, max_len], each row a sequence followed by ``pad_id``
    lengths : int64 [N], the number of tokens kept in each row
    """
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if max_len is None:
        width = int(lengths.max(initial=0))
    elif isinstance(max_len, (int, np.integer)) and max_len >= 0:
        width = int(max_len)
        lengths = np.minimum(lengths, width)
    else:
        raise ValueError(f"max_len: expected None or an integer >= 0, got {max_len!r}")
    out = np.full((len(seqs), width), pad_id, dtype=np.int64)
    for row, (s, n) in enumerate(zip(seqs, lengths)):
        out[row, :n] = s[:n]
    return out, lengths


def minibatches(*arrays: np.ndarray, batch_size: int, shuffle: bool = True, seed: Any = None,
                drop_last: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
    """Iterate over aligned minibatches of ``arrays`` (same first dimension N).

    Parameters
    ----------
    *arrays : arrays [N, ...]
    batch_size : int
    shuffle : bool, visit the rows in a random order drawn from ``seed``
    seed : int, None, or a numpy Generator (reused and advanced: pass the same Generator every
        epoch for a new, reproducible order each epoch)
    drop_last : bool, skip the last batch when it is smaller than ``batch_size``

    Yields
    ------
    a tuple with one [batch, ...] slice of each array
    """
    if not arrays:
        raise ValueError("minibatches: expected at least one array")
    n = len(arrays[0])
    for k, a in enumerate(arrays):
        if len(a) != n:
            raise ValueError(f"arrays[{k}]: expected {n} rows like arrays[0], got {len(a)}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        yield tuple(np.asarray(a)[idx] for a in arrays)


# ----------------------------------------------------------------------------------------------
# Dates: a translation task.

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# Each style writes a date as people do; month-first numeric dates are written with "/" and
# day-first ones with "." or "-" so that no string is ambiguous.
_DATE_STYLES = {
    "long": lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    "us-long": lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
    "us-short": lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    "short": lambda d: f"{d.day} {_MONTHS[d.month - 1][:3]} {d.year}",
    "weekday": lambda d: f"{_DAYS[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day}, {d.year}",
    "weekday-short": lambda d: (f"{_DAYS[d.weekday()][:3]} {d.day} {_MONTHS[d.month - 1][:3]} "
                                f"{d.year}"),
    "ordinal": lambda d: f"the {_ordinal(d.day)} of {_MONTHS[d.month - 1]} {d.year}",
    "us-ordinal": lambda d: f"{_MONTHS[d.month - 1]} {_ordinal(d.day)} {d.year}",
    "dotted": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "us-slashed": lambda d: f"{d.month}/{d.day}/{d.year}",
    "dashed": lambda d: f"{d.day}-{_MONTHS[d.month - 1][:3]}-{d.year}",
    "lower": lambda d: f"{d.day} {_MONTHS[d.month - 1].lower()} {d.year}",
    "upper": lambda d: f"{_MONTHS[d.month - 1][:3].upper()} {d.day} {d.year}",
}
DATE_STYLES = tuple(_DATE_STYLES)

_FIRST_DAY = datetime.date(1900, 1, 1)
_NUM_DAYS = (datetime.date(2099, 12, 31) - _FIRST_DAY).days + 1


def date_pairs(n: int, seed: Any = None,
               styles: Sequence[str] = DATE_STYLES) -> list[tuple[str, str]]:
    """``n`` distinct (human-written date, ISO date) pairs, dates uniform in 1900-2099.

    Parameters
    ----------
    n : int
    seed : int, None or a numpy Generator
    styles : names from ``DATE_STYLES``, drawn uniformly

    Returns
    -------
    list of (source, target) strings; no two sources are equal, so any split of the list into
    training and held-out pairs shares no pair.
    """
    unknown = sorted(set(styles) - set(_DATE_STYLES))
    if unknown or not styles:
        raise ValueError(f"styles: expected names from {DATE_STYLES}, got {tuple(styles)!r}")
    if n > _NUM_DAYS * len(styles) // 2:
        raise ValueError(f"n: at most {_NUM_DAYS * len(styles) // 2} distinct pairs, got {n}")
    rng = np.random.default_rng(seed)
    writers = [_DATE_STYLES[s] for s in styles]
    pairs, seen = [], set()
    while len(pairs) < n:
        day = _FIRST_DAY + datetime.timedelta(days=int(rng.integers(_NUM_DAYS)))
        source = writers[int(rng.integers(len(writers)))](day)
        if source not in seen:
            seen.add(source)
            pairs.append((source, day.isoformat()))
    return pairs


# ----------------------------------------------------------------------------------------------
# Parity.

def parity_data(n: int, length: int, seed: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Random bit strings and their running parity.

    Returns
    -------
    bits : int64 [n, length], uniform 0/1
    parity : int64 [n, length], parity[:, t] = bits[:, 0] xor ... xor bits[:, t]
    """
    bits = np.random.default_rng(seed).integers(0, 2, size=(n, length), dtype=np.int64)
    return bits, np.cumsum(bits, axis=1) % 2


# ----------------------------------------------------------------------------------------------
# Text for a character-level language model: sentences from a small grammar.

_DETERMINERS = {False: ["the", "a", "every", "one", "that", "this"],
                True: ["the", "some", "many", "two", "those", "these"]}
_ADJECTIVES = ["old", "young", "quiet", "small", "bright", "tired", "clever", "green", "cold",
               "happy", "distant", "curious"]
# (singular, plural)
_NOUNS = [("sailor", "sailors"), ("river", "rivers"), ("garden", "gardens"),
          ("teacher", "teachers"), ("dog", "dogs"), ("city", "cities"), ("lamp", "lamps"),
          ("child", "children"), ("boat", "boats"), ("forest", "forests"),
          ("painter", "painters"), ("window", "windows"), ("bird", "birds"),
          ("mountain", "mountains"), ("baker", "bakers"), ("fox", "foxes")]
# (present singular, present plural, past)
_VERBS = [("sees", "see", "saw"), ("finds", "find", "found"), ("follows", "follow", "followed"),
          ("remembers", "remember", "remembered"), ("paints", "paint", "painted"),
          ("watches", "watch", "watched"), ("carries", "carry", "carried"),
          ("likes", "like", "liked"), ("visits", "visit", "visited"), ("hears", "hear", "heard")]
_ADVERBS = ["slowly", "often", "never", "quietly", "always", "gladly"]
_PREPOSITIONS = ["near", "behind", "under", "beside", "across"]
_CONJUNCTIONS = ["and", "but", "while", "because"]


def _noun_phrase(rng: np.random.Generator, plural: bool) -> str:
    words = [str(rng.choice(_DETERMINERS[plural]))]
    if rng.random() < 0.5:
        words.append(str(rng.choice(_ADJECTIVES)))
    words.append(_NOUNS[rng.integers(len(_NOUNS))][plural])
    if rng.random() < 0.2:
        other = bool(rng.random() < 0.5)
        words += [str(rng.choice(_PREPOSITIONS)), str(rng.choice(_DETERMINERS[other])),
                  _NOUNS[rng.integers(len(_NOUNS))][other]]
    return " ".join(words)


def _clause(rng: np.random.Generator, past: bool) -> str:
    """Subject, optional adverb, verb agreeing with the subject (or in the past), object."""
    plural = bool(rng.random() < 0.4)
    words = [_noun_phrase(rng, plural)]
    if rng.random() < 0.3:
        words.append(str(rng.choice(_ADVERBS)))
    words += [_VERBS[rng.integers(len(_VERBS))][2 if past else int(plural)],
              _noun_phrase(rng, bool(rng.random() < 0.4))]
    return " ".join(words)


def charlm_text(n_sentences: int = 2000, seed: Any = 0) -> str:
    """English-like text from a small grammar, one sentence per line.

    ``"Some old sailors often watch a green boat near the river."``: determiners, adjectives,
    nouns, verbs that agree in number with their subject (or are in the past tense throughout a
    sentence), prepositional phrases and conjunctions, so that a character-level model has words,
    spaces, agreement, capitals and punctuation to learn.
    """
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_sentences):
        past = bool(rng.random() < 0.3)
        sentence = _clause(rng, past)
        if rng.random() < 0.3:
            sentence += f" {rng.choice(_CONJUNCTIONS)} {_clause(rng, past)}"
        lines.append(sentence[0].upper() + sentence[1:] + ".")
    return "\n".join(lines) + "\n"
