"""rnnfast.data (Vocab, pad_batch, minibatches, the generated datasets) and rnnfast.metrics (BLEU
against hand-computed cases; corpus BLEU against nltk when it is importable)."""

import contextlib
import datetime
import math
import re

import numpy as np
import pytest

from rnnfast import data
from rnnfast.metrics import bleu, corpus_bleu

try:
    from nltk.translate import bleu_score
except ImportError:  # the hand-computed cases still run
    bleu_score = None


# ----------------------------------------------------------------------------------------------
# Vocab, pad_batch, minibatches.

def test_vocab_ids():
    vocab = data.Vocab([["b", "a", "c"], ["a", "b", "a", "d"]], min_freq=2)
    assert vocab.idx_to_token == ["<pad>", "<bos>", "<eos>", "<unk>", "a", "b"]
    assert len(vocab) == 6 and vocab.unk == 3
    assert vocab["a"] == 4 and vocab["c"] == vocab.unk  # c seen once < min_freq
    assert vocab[["b", "zzz", "<eos>"]] == [5, 3, 2]
    assert vocab.to_tokens([4, 5, 0]) == ["a", "b", "<pad>"] and vocab.to_tokens(2) == "<eos>"
    assert vocab.to_tokens(np.array([5])) == ["b"]
    assert "a" in vocab and "c" not in vocab
    with pytest.raises(IndexError, match=r"ids: expected ids in \[0, 6\), got 6"):
        vocab.to_tokens(6)


def test_vocab_ties_and_reserved():
    flat = data.Vocab("hello", reserved=())  # a string is a sequence of tokens (characters)
    assert flat.idx_to_token == ["<unk>", "l", "e", "h", "o"]  # by count, ties alphabetical
    custom = data.Vocab(["x"], reserved=("<unk>", "<s>"))
    assert custom.idx_to_token == ["<unk>", "<s>", "x"] and custom.unk == 0
    with pytest.raises(ValueError, match="reserved: expected distinct tokens"):
        data.Vocab([], reserved=("<pad>", "<pad>"))


def test_pad_batch():
    ids, lengths = data.pad_batch([[5, 6, 7], [8], []], pad_id=0)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 1, 0])
    assert ids.dtype == lengths.dtype == np.int64
    ids, lengths = data.pad_batch([[5, 6, 7], [8]], pad_id=9, max_len=2)  # truncates
    np.testing.assert_array_equal(ids, [[5, 6], [8, 9]])
    np.testing.assert_array_equal(lengths, [2, 1])
    ids, lengths = data.pad_batch([[1]], pad_id=0, max_len=4)
    np.testing.assert_array_equal(ids, [[1, 0, 0, 0]])
    with pytest.raises(ValueError, match="max_len"):
        data.pad_batch([[1]], 0, max_len=-1)


def test_minibatches():
    x, y = np.arange(10), np.arange(10) * 10
    batches = list(data.minibatches(x, y, batch_size=4, seed=0))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b[0] for b in batches])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    for bx, by in batches:
        np.testing.assert_array_equal(by, bx * 10)  # rows stay aligned
    again = list(data.minibatches(x, y, batch_size=4, seed=0))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))  # same seed, same order
    rng = np.random.default_rng(0)
    first = np.concatenate([b[0] for b in data.minibatches(x, batch_size=4, seed=rng)])
    second = np.concatenate([b[0] for b in data.minibatches(x, batch_size=4, seed=rng)])
    assert list(first) != list(second)  # a Generator advances: a new order every epoch
    ordered = [b[0].tolist() for b in data.minibatches(x, batch_size=4, shuffle=False,
                                                       drop_last=True)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(ValueError, match=r"arrays\[1\]: expected 10 rows"):
        list(data.minibatches(x, y[:3], batch_size=2))


# ----------------------------------------------------------------------------------------------
# Generated datasets.

_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"]


def _read_date(source):
    """An independent reader of every style: (year, month, day) from the written date."""
    s = source.lower()
    if re.fullmatch(r"\d{2}\.\d{2}\.\d{4}", s):
        d, m, y = s.split(".")
        return int(y), int(m), int(d)
    if re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", s):
        m, d, y = s.split("/")
        return int(y), int(m), int(d)
    words = re.findall(r"[a-z]+|\d+", s)
    month = next(i + 1 for i, name in enumerate(_MONTHS)
                 if any(w == name or w == name[:3] for w in words))
    numbers = [int(w) for w in words if w.isdigit()]
    year = next(n for n in numbers if n >= 1000)
    day = next(n for n in numbers if n < 1000)
    return year, month, day


def test_date_pairs():
    pairs = data.date_pairs(3000, seed=0)
    assert pairs == data.date_pairs(3000, seed=0) and pairs != data.date_pairs(3000, seed=1)
    assert len({s for s, _ in pairs}) == 3000  # distinct sources: any split is clean
    for source, target in pairs:
        day = datetime.date.fromisoformat(target)
        assert 1900 <= day.year <= 2099 and target == day.isoformat()
        assert _read_date(source) == (day.year, day.month, day.day), source
    for style in data.DATE_STYLES:  # every style is used
        assert data.date_pairs(1, seed=0, styles=[style])
    with pytest.raises(ValueError, match="styles"):
        data.date_pairs(1, styles=["klingon"])


def test_parity_data():
    bits, parity = data.parity_data(50, 12, seed=0)
    assert bits.shape == parity.shape == (50, 12) and set(np.unique(bits)) == {0, 1}
    for b, p in zip(bits, parity):
        running = 0
        for t in range(12):
            running ^= int(b[t])
            assert p[t] == running


def test_charlm_text():
    text = data.charlm_text(200, seed=0)
    assert text == data.charlm_text(200, seed=0) and text != data.charlm_text(200, seed=1)
    lines = text.splitlines()
    assert len(lines) == 200 and text.endswith("\n")
    assert all(line[0].isupper() and line.endswith(".") for line in lines)
    assert set(text) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ .\n")


# ----------------------------------------------------------------------------------------------
# BLEU.

def test_bleu_hand_computed():
    assert bleu(list("abcd"), list("abcd")) == 1.0
    # Same length: no penalty; p1 = 3/4, p2 = 2/3 ("a b", "b c" match, "c d" not).
    assert bleu(list("abcd"), list("abce"), k=2) == pytest.approx((3 / 4) ** 0.5 * (2 / 3) ** 0.25)
    # Short prediction: exp(1 - 4/2) times p1 = p2 = 1.
    assert bleu(list("ab"), list("abcd"), k=2) == pytest.approx(math.exp(-1))
    # Clipping: "a" counts once against a label with one "a"; no bigram matches.
    assert bleu(list("aaa"), list("ab"), k=1) == pytest.approx((1 / 3) ** 0.5)
    assert bleu(list("aaa"), list("ab"), k=2) == 0.0
    # k = 3 on d2l's case: only n <= len_pred enter; a longer prediction has no penalty.
    assert bleu(["x", "y"], ["x", "y", "z"], k=3) == pytest.approx(math.exp(1 - 3 / 2))
    assert bleu(list("abcde"), list("abc"), k=3) == pytest.approx(
        (3 / 5) ** 0.5 * (2 / 4) ** 0.25 * (1 / 3) ** 0.125)
    assert bleu([], ["a"]) == 0.0
    assert bleu([1, 2, 3], [1, 2, 3]) == 1.0  # any tokens: ids too
    with pytest.raises(TypeError, match="split it first"):
        bleu("a b", "a b")


def test_corpus_bleu_hand_computed():
    hyp = [list("abcd"), list("xbc")]
    ref = [list("abce"), list("xbcf")]
    # 1-grams 6/7, 2-grams 4/5, 3-grams 2/3, 4-grams 0/2 ("xbc" has no 4-gram: it counts one in
    # the denominator); c = 7, r = 8. A zero precision makes the score 0 without smoothing.
    assert corpus_bleu(hyp, ref) == 0.0
    expected = math.exp(1 - 8 / 7) * ((6 / 7) * (4 / 5) * (2 / 3)) ** (1 / 3)
    assert corpus_bleu(hyp, ref, max_n=3) == pytest.approx(expected)
    # Several references: counts clipped by the largest count in any; closest length, ties shorter.
    # "aab": both "a"s match thanks to "aabb"; lengths 2 and 4 are both 1 away, the shorter (2)
    # counts, and 3 > 2 means no brevity penalty.
    assert corpus_bleu([list("aab")], [[list("ab"), list("aabb")]], max_n=1) == 1.0
    # Against "aabbbb" alone: r = 6, c = 3.
    assert corpus_bleu([list("aab")], [list("aabbbb")], max_n=1) == pytest.approx(math.exp(-1))
    assert corpus_bleu([list("abcd")], [list("abcd")]) == 1.0
    assert corpus_bleu([list("abc")], [list("abc")]) == 0.0  # no 4-gram at all: p_4 = 0 / 1
    with pytest.raises(ValueError, match="references: expected 1 entries"):
        corpus_bleu([list("a")], [])


@pytest.mark.skipif(bleu_score is None, reason="nltk is not installed")
@pytest.mark.parametrize("max_n", [4, 2])
def test_corpus_bleu_matches_nltk(max_n):
    rng = np.random.default_rng(0)
    words = list("abcdef")
    for trial in range(20):
        hyps, refs = [], []
        for _ in range(int(rng.integers(1, 6))):
            reference = list(rng.choice(words, size=int(rng.integers(3, 12))))
            hyp = [w if rng.random() < 0.8 else str(rng.choice(words)) for w in reference]
            hyp = hyp[:int(rng.integers(max(1, len(hyp) - 3), len(hyp) + 1))]  # sometimes short
            if rng.random() < 0.3:
                hyp = hyp[:2]  # shorter than max_n: nltk counts one n-gram in the denominator
            extra = [list(rng.choice(words, size=int(rng.integers(2, 10))))
                     for _ in range(int(rng.integers(0, 3)))]
            hyps.append(hyp)
            refs.append([reference] + extra)
        ours = corpus_bleu(hyps, refs, max_n=max_n)
        with pytest.warns(UserWarning) if ours == 0 else contextlib.nullcontext():
            theirs = bleu_score.corpus_bleu(refs, hyps, weights=(1 / max_n,) * max_n)
        if ours == 0:
            assert theirs < 1e-60, trial  # nltk: a tiny number where a precision is 0
        else:
            assert ours == pytest.approx(theirs, rel=1e-12), trial
    nonzero = corpus_bleu([list("abcdefg")], [list("abcdxfg")], max_n=max_n)
    assert nonzero > 0

