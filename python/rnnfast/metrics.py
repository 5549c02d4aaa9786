"""BLEU: the per-sentence score as d2l teaches it, and standard corpus BLEU (Papineni et al. 2002).

Both take sequences of tokens (lists of words, characters, ids...). A plain string is refused:
split it first (``sentence.split()`` for words, ``list(sentence)`` for characters).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["bleu", "corpus_bleu"]


def _tokens(name: str, seq: Any) -> list:
    if isinstance(seq, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of tokens, got a string; split it first "
                        "(str.split() for words, list(s) for characters)")
    return list(seq)


def _ngrams(tokens: list, n: int) -> collections.Counter:
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _clipped_matches(pred: list, label_counts: collections.Counter, n: int) -> int:
    """How many n-grams of ``pred`` also occur in the label, each label n-gram used at most as
    often as it occurs there."""
    return sum(min(count, label_counts[gram]) for gram, count in _ngrams(pred, n).items())


def bleu(pred_tokens: Sequence[Any], label_tokens: Sequence[Any], k: int = 2) -> float:
    """d2l's BLEU of one prediction against one label.

    ``exp(min(0, 1 - len_label / len_pred)) * prod_{n=1..min(k, len_pred)} p_n ** (1 / 2**n)``,
    p_n the precision of the prediction's n-grams, each label n-gram matched at most as often as
    it occurs in the label. 1 for an exact match; 0 for an empty prediction.
    """
    pred, label = _tokens("pred_tokens", pred_tokens), _tokens("label_tokens", label_tokens)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    len_pred, len_label = len(pred), len(label)
    if len_pred == 0:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len_label / len_pred))
    for n in range(1, min(k, len_pred) + 1):
        matches = _clipped_matches(pred, _ngrams(label, n), n)
        score *= (matches / (len_pred - n + 1)) ** (0.5 ** n)
    return score


def _is_reference_list(refs: Any) -> bool:
    """True for a list of references (each a token sequence), False for one reference."""
    return (isinstance(refs, (list, tuple)) and len(refs) > 0
            and all(isinstance(r, (list, tuple)) for r in refs))


def corpus_bleu(hypotheses: Sequence[Sequence[Any]], references: Sequence[Any],
                max_n: int = 4) -> float:
    """Corpus BLEU: n-gram statistics summed over the corpus, then one score (no smoothing).

    ``BP * exp(sum_{n=1..max_n} log(p_n) / max_n)`` with p_n = (clipped n-gram matches summed over
    sentences) / (hypothesis n-grams summed over sentences), each reference's n-gram counting at
    most its largest count in any reference of the sentence; BP = 1 if c > r else exp(1 - r/c),
    c the total hypothesis length, r the sum over sentences of the reference length closest to the
    hypothesis's (the shorter on a tie). Equal to ``nltk.translate.bleu_score.corpus_bleu`` with
    weights ``(1/max_n,) * max_n``, including its convention that a sentence shorter than n
    counts one n-gram in the denominator; where some p_n is 0 the score is exactly 0 (nltk
    returns a number below 1e-60 and a warning).

    Parameters
    ----------
    hypotheses : N token sequences
    references : N entries, each one token sequence or a list of token sequences (several
        references for that hypothesis)
    max_n : int, the longest n-gram
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"references: expected {len(hypotheses)} entries like hypotheses, got "
                         f"{len(references)}")
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"max_n: expected an integer >= 1, got {max_n!r}")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_length = ref_length = 0
    for i, (hyp, refs) in enumerate(zip(hypotheses, references)):
        hyp = _tokens(f"hypotheses[{i}]", hyp)
        if not _is_reference_list(refs):
            refs = [refs]
        refs = [_tokens(f"references[{i}]", r) for r in refs]
        for n in range(1, max_n + 1):
            best: collections.Counter = collections.Counter()
            for r in refs:
                best |= _ngrams(r, n)  # elementwise max of the counts
            matches[n - 1] += _clipped_matches(hyp, best, n)
            totals[n - 1] += max(1, len(hyp) - n + 1)
        hyp_length += len(hyp)
        ref_length += min((len(r) for r in refs), key=lambda m: (abs(m - len(hyp)), m))
    if hyp_length == 0 or min(matches) == 0:
        return 0.0
    brevity = 1.0 if hyp_length > ref_length else math.exp(1 - ref_length / hyp_length)
    return brevity * math.exp(sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n)
