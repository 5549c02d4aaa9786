"""rnnfast.Seq2Seq: gradients end to end against finite differences, padding never mattering,
greedy and beam search against independent searches built on ``log_prob`` (greedy step by step,
exhaustive enumeration on a tiny vocabulary), the length penalty, a training run that learns,
save/load and its errors."""

import itertools

import numpy as np
import pytest

import rnnfast
from rnnfast import Seq2Seq
from test_nn import numeric_gradient

PAD, BOS, EOS = 0, 1, 2
CELLS = pytest.mark.parametrize("cell", ["gru", "lstm"])

# Three sources of lengths 4, 2, 3 and targets of lengths 3, 1, 2 (each ending with EOS).
SRC = np.array([[3, 4, 5, 6], [6, 3, PAD, PAD], [5, 5, 4, PAD]])
TGT = np.array([[3, 4, EOS], [EOS, PAD, PAD], [4, EOS, PAD]])


def _model(cell="gru", tgt_vocab=6, dtype=np.float64, seed=0, **options):
    options = {"embed_size": 3, "hidden_size": 4, "num_layers": 2, **options}
    return Seq2Seq(7, tgt_vocab, cell=cell, dtype=dtype, seed=seed, **options)


def _sharpen(model, factor=3.0):
    """Scale the output layer so that the model's distributions are peaked, not near uniform."""
    for p in model.output.parameters().values():
        p *= factor


# ----------------------------------------------------------------------------------------------
# Gradients.

@CELLS
def test_gradients_match_finite_differences(cell, assert_close):
    """Three entries of every parameter (embedding rows that are used), compared as one sampled
    gradient vector: its scale is the model's, not that of the smallest parameter's gradient,
    which for the first encoder layer is ~1e-4, too close to the differences' rounding (~1e-12)
    for a per-tensor relative check at 1e-8."""
    model = _model(cell)
    model.zero_grad()
    loss = model.loss(SRC, TGT, backward=True)
    assert loss == model.loss(SRC, TGT)  # dropout 0: training and evaluation forwards agree
    rng = np.random.default_rng(1)
    used_rows = {"encoder_embedding.weight": np.unique(SRC[SRC != PAD]),
                 "decoder_embedding.weight": np.array([BOS, 3, 4])}  # the decoder's inputs
    grads = model.grads
    labels, actual, expected = [], [], []
    for name, p in model.parameters().items():
        if name in used_rows:
            picks = [(int(rng.choice(used_rows[name])), int(rng.integers(p.shape[1])))
                     for _ in range(3)]
        else:
            picks = [tuple(int(rng.integers(n)) for n in p.shape) for _ in range(3)]
        numeric = numeric_gradient(lambda: model.loss(SRC, TGT), p, picks)
        for index in picks:
            labels.append(f"{name}{list(index)}")
            actual.append(grads[name][index])
            expected.append(numeric[index])
    actual, expected = np.array(actual), np.array(expected)
    assert np.all(np.abs(expected) > 0), "every sampled entry has a gradient"
    worst = labels[int(np.argmax(np.abs(actual - expected)))]
    assert_close(actual, expected, "float64", "backward",
                 f"{cell} sampled gradient ({len(labels)} entries, worst {worst})")
    unused = sorted(set(range(7)) - set(used_rows["encoder_embedding.weight"]))
    np.testing.assert_array_equal(grads["encoder_embedding.weight"][unused], 0)


@CELLS
def test_loss_is_the_mean_negative_log_prob(cell):
    model = _model(cell)
    n_tokens = np.count_nonzero(TGT != PAD)
    assert model.loss(SRC, TGT) == pytest.approx(-model.log_prob(SRC, TGT).sum() / n_tokens,
                                                 rel=1e-12)
    lengths = (TGT != PAD).sum(axis=1)
    np.testing.assert_array_equal(model.log_prob(SRC, TGT), model.log_prob(SRC, TGT, lengths))
    np.testing.assert_array_equal(model.log_prob(SRC, TGT, [0, 0, 0]), 0.0)
    lp = model.log_prob(SRC, TGT)
    assert lp.dtype == np.float64 and lp.shape == (3,) and np.all(lp < 0)


# ----------------------------------------------------------------------------------------------
# Padding never matters.

@CELLS
def test_extra_padding_changes_nothing(cell):
    model = _model(cell)
    wide_src = np.concatenate([SRC, np.full((3, 4), PAD)], axis=1)
    wide_tgt = np.concatenate([TGT, np.full((3, 2), PAD)], axis=1)
    model.zero_grad()
    loss = model.loss(SRC, TGT, backward=True)
    grads = {k: g.copy() for k, g in model.grads.items()}
    model.zero_grad()
    assert model.loss(wide_src, wide_tgt, backward=True) == loss
    for name, g in model.grads.items():
        np.testing.assert_array_equal(g, grads[name], err_msg=name)
    np.testing.assert_array_equal(model.log_prob(wide_src, wide_tgt), model.log_prob(SRC, TGT))
    for beam in (1, 3):
        assert model.predict(wide_src, max_len=6, beam_size=beam) == \
            model.predict(SRC, max_len=6, beam_size=beam)


@CELLS
def test_each_row_as_if_alone(cell, assert_close):
    """The encoder reads each source up to its own length: a short row in a batch with longer
    ones gives what it gives alone, with no padding at all."""
    model = _model(cell)
    _sharpen(model)
    batch_lp = model.log_prob(SRC, TGT)
    batch_greedy = model.predict(SRC, max_len=6)
    batch_beam = model.predict(SRC, max_len=6, beam_size=3)
    for n in range(3):
        src = SRC[n:n + 1, :np.count_nonzero(SRC[n])]
        tgt = TGT[n:n + 1, :np.count_nonzero(TGT[n])]
        assert_close(model.log_prob(src, tgt), batch_lp[n:n + 1], "float64", "forward",
                     f"log_prob row {n}")
        assert model.predict(src, max_len=6) == batch_greedy[n:n + 1]
        assert model.predict(src, max_len=6, beam_size=3) == batch_beam[n:n + 1]


# ----------------------------------------------------------------------------------------------
# Decoding.

def _greedy_by_log_prob(model, src_row, max_len, V):
    """Greedy decoding from scratch: at each step, the next-token log-probabilities are
    log_prob(prefix + [v]) - log_prob(prefix), through the teacher-forced path."""
    prefix = []
    for _ in range(max_len):
        tgt = np.array([prefix + [v] for v in range(V)])
        scores = model.log_prob(np.repeat(src_row[None], V, axis=0), tgt,
                                np.full(V, len(prefix) + 1))
        token = int(np.argmax(scores))
        if token == EOS:
            return prefix
        prefix.append(token)
    return prefix


def _all_targets(V, max_len):
    """Every hypothesis a search can end with: k < max_len non-eos tokens then eos, or max_len
    non-eos tokens. Returns (tgt [M, max_len] ids, lengths [M] including eos, outputs)."""
    others = [v for v in range(V) if v != EOS]
    rows, lengths, outputs = [], [], []
    for k in range(max_len + 1):
        for seq in itertools.product(others, repeat=k):
            full = list(seq) + ([EOS] if k < max_len else [])
            rows.append(full + [PAD] * (max_len - len(full)))
            lengths.append(len(full))
            outputs.append(list(seq))
    return np.array(rows), np.array(lengths), outputs


def _exhaustive(model, src_row, V, max_len, alpha):
    """The best hypothesis by log P / L ** alpha over every possible output, and its score."""
    tgt, lengths, outputs = _all_targets(V, max_len)
    logp = model.log_prob(np.repeat(src_row[None], len(tgt), axis=0), tgt, lengths)
    score = logp / lengths.astype(float) ** alpha
    best = int(np.argmax(score))
    return outputs[best], score[best], dict(zip(map(tuple, outputs), score))


@CELLS
def test_beam_1_is_greedy(cell):
    model = _model(cell, seed=5, hidden_size=6)
    _sharpen(model, 6.0)
    for p in model.encoder.parameters().values():
        p *= 3  # sources that matter: different rows, different outputs
    predictions = model.predict(SRC, max_len=5, beam_size=1)
    assert predictions == [_greedy_by_log_prob(model, SRC[n], 5, 6) for n in range(3)]
    assert any(len(p) < 5 for p in predictions)  # some stop at eos, before max_len


@CELLS
@pytest.mark.parametrize("alpha", [0.0, 0.75, 2.0])
def test_wide_beam_is_exhaustive_search(cell, alpha):
    """V = 5 (two real tokens), max_len = 4: at most 4**3 * 5 = 320 candidates at any step, so a
    beam of 320 never drops one and must find the exhaustive optimum of log P / L**alpha."""
    V, max_len = 5, 4
    model = _model(cell, tgt_vocab=V, seed=4)
    _sharpen(model, 4.0)
    predictions = model.predict(SRC, max_len=max_len, beam_size=320, length_penalty=alpha)
    for n in range(3):
        best, best_score, scores = _exhaustive(model, SRC[n], V, max_len, alpha)
        assert predictions[n] == best, f"row {n}"
        second = sorted(scores.values())[-2]
        assert best_score - second > 1e-9, "a near tie would make this test fragile"


def test_length_penalty_changes_the_choice():
    """A decoder that ignores its input, with p(eos) = 0.4, p(3) = 0.5, p(4) = 0.08 (pad, bos
    0.01): without normalisation the empty output ([eos], log P = -0.92) wins; with alpha = 1 the
    four-token [3, 3, 3, 3] (mean log P -0.69) beats [eos] (-0.92) and [3, 3, 3, eos] (-0.75).
    Greedy takes 3 every time."""
    V = 5
    model = _model("gru", tgt_vocab=V)
    out = model.output.parameters()
    out["weight"][...] = 0
    out["bias"][...] = np.log([0.01, 0.01, 0.4, 0.5, 0.08])
    src = SRC[:1]
    assert model.predict(src, max_len=4, beam_size=320, length_penalty=0.0) == [[]]
    assert model.predict(src, max_len=4, beam_size=320, length_penalty=1.0) == [[3, 3, 3, 3]]
    assert model.predict(src, max_len=4, beam_size=2, length_penalty=0.0) == [[]]
    assert model.predict(src, max_len=4, beam_size=1, length_penalty=0.0) == [[3, 3, 3, 3]]
    for alpha, expected in ((0.0, []), (1.0, [3, 3, 3, 3])):
        assert _exhaustive(model, src[0], V, 4, alpha)[0] == expected


def test_decoding_is_batched():
    """Every hypothesis of every source advances in one decoder call per step: at most max_len
    calls of T = 1, whatever the number of sources and the beam width."""
    model = _model("lstm", seed=5)
    calls = []
    forward = model.decoder.forward

    def counting(x, state=None, lengths=None):
        calls.append(np.shape(x))
        return forward(x, state, lengths)

    model.decoder.forward = counting
    src = np.tile(SRC, (5, 1))  # 15 sources
    model.predict(src, max_len=6, beam_size=4)
    assert 1 <= len(calls) <= 6 and all(shape[0] == 1 for shape in calls)
    assert max(shape[1] for shape in calls) > 15  # many hypotheses per call


# ----------------------------------------------------------------------------------------------
# Training.

def _reversal_task(n, seed):
    """Sources of 2 to 5 tokens from ids 3..8, targets the reversed sequence + eos."""
    rng = np.random.default_rng(seed)
    src = np.zeros((n, 5), np.int64)
    tgt = np.zeros((n, 6), np.int64)
    for row in range(n):
        k = int(rng.integers(2, 6))
        seq = rng.integers(3, 9, size=k)
        src[row, :k] = seq
        tgt[row, :k + 1] = list(seq[::-1]) + [EOS]
    return src, tgt


@pytest.fixture
def one_thread():
    """One kernel thread: tiny matrices, and a busy CI machine makes a second thread a loss
    (results are identical whatever the thread count)."""
    previous = rnnfast.get_num_threads()
    rnnfast.set_num_threads(1)
    yield
    rnnfast.set_num_threads(previous)


def test_training_learns(one_thread):
    src, tgt = _reversal_task(256, seed=0)
    model = Seq2Seq(9, 9, embed_size=16, hidden_size=48, num_layers=1, seed=0)
    history = model.fit(src, tgt, epochs=25, batch_size=32, lr=0.01, progress=False)
    assert len(history) == 25
    assert history[-1] < history[0] / 10, history  # measured: 129x
    predictions = model.predict(src[:64], max_len=7)
    expected = [list(row[:np.count_nonzero(row) - 1]) for row in tgt[:64]]
    assert np.mean([p == e for p, e in zip(predictions, expected)]) > 0.8


def test_fit_is_reproducible_and_reports():
    src, tgt = _reversal_task(40, seed=1)
    histories, reports = [], []
    for _ in range(2):
        model = Seq2Seq(9, 9, embed_size=4, hidden_size=8, dropout=0.2, cell="lstm", seed=2)
        histories.append(model.fit(src, tgt, epochs=2, batch_size=16, optimizer="sgd", lr=0.1,
                                   progress=False, callback=lambda e, loss: reports.append(e)))
    assert reports == [1, 2, 1, 2]
    assert histories[0] == histories[1]


# ----------------------------------------------------------------------------------------------
# Files.

@pytest.mark.parametrize(("cell", "dtype"), [("gru", np.float32), ("lstm", np.float64)])
def test_save_load_round_trip(cell, dtype, tmp_path):
    model = _model(cell, dtype=dtype, num_layers=3, dropout=0.1, seed=6)
    _sharpen(model)
    path = tmp_path / "model"  # no extension: written exactly there
    model.save(path)
    assert path.exists()
    loaded = Seq2Seq.load(path)
    assert loaded.config == model.config and loaded.dtype == dtype
    for name, p in model.parameters().items():
        q = loaded.parameters()[name]
        assert q.dtype == dtype
        np.testing.assert_array_equal(q, p, err_msg=name)
    for beam in (1, 3):
        assert loaded.predict(SRC, max_len=6, beam_size=beam) == \
            model.predict(SRC, max_len=6, beam_size=beam)
    np.testing.assert_array_equal(loaded.log_prob(SRC, TGT), model.log_prob(SRC, TGT))


def test_load_refuses_other_files(tmp_path):
    model = _model()
    good = tmp_path / "good.npz"
    model.save(good)
    raw = good.read_bytes()

    def write(name, content):
        path = tmp_path / name
        path.write_bytes(content)
        return path

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, __format__=np.array("Seq2Seq"), x=np.array([{"a": 1}], dtype=object))
    array = tmp_path / "array.npy"
    np.save(array, np.ones(3))
    layer = tmp_path / "layer.npz"
    rnnfast.GRU(2, 3).save(layer)  # an rnnfast file of another kind
    arrays = dict(np.load(good))
    arrays["__config__"] = np.array(str(arrays["__config__"]).replace('"hidden_size": 4',
                                                                      '"hidden_size": 5'))
    mismatched = tmp_path / "mismatched.npz"
    np.savez(mismatched, **arrays)
    del arrays["param/output.bias"]
    arrays["__config__"] = np.array(str(arrays["__config__"]).replace('"hidden_size": 5',
                                                                      '"hidden_size": 4'))
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, **arrays)

    bad = {
        "truncated": write("truncated.npz", raw[:len(raw) // 2]),
        "corrupt": write("corrupt.npz", bytes(np.random.default_rng(0).integers(0, 256, 500,
                                                                               dtype=np.uint8))),
        "flipped": write("flipped.npz", raw[:200] + bytes(b ^ 0xFF for b in raw[200:400])
                         + raw[400:]),
        "text": write("text.npz", b"hello, world\n"),
        "empty": write("empty.npz", b""),
        "foreign": foreign,
        "pickled": pickled,
        "npy": array,
        "layer": layer,
        "mismatched": mismatched,
        "incomplete": incomplete,
    }
    for label, path in bad.items():
        with pytest.raises(ValueError, match=r"not a (readable rnnfast|valid) Seq2Seq file") as err:
            Seq2Seq.load(path)
        assert str(path) in str(err.value), label
    with pytest.raises(FileNotFoundError):
        Seq2Seq.load(tmp_path / "missing.npz")


def test_load_state_dict_is_all_or_nothing():
    model = _model()
    state = model.state_dict()
    broken = dict(state)
    broken["output.bias"] = np.zeros(5)  # wrong shape, loaded after everything else
    other = _model(seed=9)
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"bias: expected shape \(6,\), got \(5,\)"):
        other.load_state_dict({k: state[k] if k != "output.bias" else broken[k] for k in state})
    for name, p in other.parameters().items():
        np.testing.assert_array_equal(p, before[name], err_msg=name)
    other.load_state_dict(state)
    assert other.predict(SRC, max_len=5) == model.predict(SRC, max_len=5)
    with pytest.raises(KeyError, match="unexpected keys"):
        other.load_state_dict({"nonsense": np.ones(1)})


# ----------------------------------------------------------------------------------------------
# Errors.

def test_input_errors():
    model = _model()
    with pytest.raises(ValueError, match="src: row 1 has a token after pad_id = 0"):
        model.predict(np.array([[3, 4], [0, 5]]))
    with pytest.raises(ValueError, match=r"src: row 1 is empty \(only padding\)"):
        model.predict(np.array([[3, 4], [0, 0]]))
    with pytest.raises(ValueError, match="tgt: row 0 does not end with eos_id = 2"):
        model.loss(SRC[:1], np.array([[3, 4]]))
    with pytest.raises(ValueError, match="tgt: row 1 does not end with eos_id = 2"):
        model.fit(SRC, np.array([[3, EOS], [0, 0], [EOS, 0]]), progress=False)
    with pytest.raises(ValueError, match="tgt: expected 3 rows like src, got 1"):
        model.loss(SRC, TGT[:1])
    with pytest.raises(ValueError, match=r"src: expected ids in \[0, 7\)"):
        model.predict(np.array([[7]]))
    with pytest.raises(TypeError, match="src: expected an array of integer ids"):
        model.predict(np.array([[3.0]]))
    with pytest.raises(ValueError, match="src: expected a non-empty 2-D array"):
        model.predict(np.array([3, 4]))
    with pytest.raises(ValueError, match="beam_size: expected an integer >= 1"):
        model.predict(SRC, beam_size=0)
    with pytest.raises(ValueError, match=r"tgt_lengths: expected 3 values in \[0, 3\]"):
        model.log_prob(SRC, TGT, [1, 2, 4])
    with pytest.raises(ValueError, match="cell: expected one of"):
        Seq2Seq(5, 5, cell="rnn")
    with pytest.raises(ValueError, match="pad_id, bos_id, eos_id: expected three different ids"):
        Seq2Seq(5, 5, bos_id=2)
    with pytest.raises(ValueError, match="eos_id: expected an id in"):
        Seq2Seq(5, 2)


def test_public_names():
    for name in ("Seq2Seq", "data", "losses", "metrics", "nn", "optim"):
        assert name in rnnfast.__all__ and hasattr(rnnfast, name)
    assert rnnfast.nn.Embedding and rnnfast.nn.Linear and rnnfast.optim.Adam
    assert rnnfast.losses.softmax_cross_entropy and rnnfast.optim.clip_grad_norm
    assert rnnfast.data.Vocab and rnnfast.data.pad_batch and rnnfast.metrics.corpus_bleu
