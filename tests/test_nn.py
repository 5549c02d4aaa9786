"""rnnfast.nn.Embedding and Linear: backward against central finite differences (float64), then
against PyTorch's modules when torch is importable; the module API shared with the layers.

``numeric_gradient`` here, the reference tests' finite differences extended to chosen entries,
serves every test of the training toolkit (losses, optimisers, Seq2Seq import it from here).
"""

import numpy as np
import pytest

import rnnfast
from rnnfast.nn import Embedding, Linear
from test_reference_gradcheck import _numeric_gradient

try:
    import torch
except ImportError:  # the finite-difference tests still run
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def numeric_gradient(loss, a, indices=None):
    """dL/da by the reference tests' five-point central differences, at ``indices`` (default:
    every entry); zero at the entries not asked for. Perturbs ``a`` in place and restores it."""
    if indices is None:
        return _numeric_gradient(loss, a)
    grad = np.zeros_like(a)
    for index in indices:
        one = a[tuple(slice(k, k + 1) for k in index)]  # a view of the single entry
        grad[index] = _numeric_gradient(loss, one).item()
    return grad


# ----------------------------------------------------------------------------------------------
# Finite differences.

@pytest.mark.parametrize("padding_idx", [None, 0], ids=["plain", "padding_idx"])
def test_embedding_backward_matches_finite_differences(padding_idx, assert_close):
    rng = np.random.default_rng(0)
    emb = Embedding(5, 3, padding_idx=padding_idx, dtype=np.float64, seed=1)
    ids = np.array([[0, 4, 4], [2, 0, 1]])  # repeated ids accumulate; row 3 unused
    g = rng.standard_normal((2, 3, 3))

    def loss():
        emb.eval()
        return float(np.sum(emb(ids) * g))

    emb.train()
    emb(ids)
    assert emb.backward(g) is None
    expected = numeric_gradient(loss, emb.parameters()["weight"])
    if padding_idx is not None:
        expected[padding_idx] = 0  # torch's convention: the padding row never learns
    assert_close(emb.grads["weight"], expected, "float64", "backward", "embedding dweight")
    np.testing.assert_array_equal(emb.grads["weight"][3], 0, err_msg="unused row")


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (1, 4)], ids=["1d", "3d", "B1"])
def test_linear_backward_matches_finite_differences(bias, shape, assert_close):
    rng = np.random.default_rng(0)
    lin = Linear(4, 3, bias=bias, dtype=np.float64, seed=2)
    x = rng.uniform(-1, 1, shape)
    g = rng.standard_normal(shape[:-1] + (3,))

    def loss():
        lin.eval()
        return float(np.sum(lin(x) * g))

    lin.train()
    lin(x)
    dx = lin.backward(g)
    assert_close(dx, numeric_gradient(loss, x), "float64", "backward", "linear dx")
    for name, p in lin.parameters().items():
        assert_close(lin.grads[name], numeric_gradient(loss, p), "float64", "backward",
                     f"linear d{name}")
    assert set(lin.grads) == ({"weight", "bias"} if bias else {"weight"})


# ----------------------------------------------------------------------------------------------
# PyTorch.

@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embedding_matches_torch(dtype, assert_close):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 7, size=(6, 4))
    ids[0, :2] = 2  # the padding id appears
    g = rng.standard_normal((6, 4, 5)).astype(dtype)
    ref = torch.nn.Embedding(7, 5, padding_idx=2, dtype=getattr(torch, np.dtype(dtype).name))
    emb = Embedding(7, 5, padding_idx=2, dtype=dtype)
    emb.load_state_dict(ref.state_dict())
    out_t = ref(torch.tensor(ids))
    (out_t * torch.tensor(g)).sum().backward()
    out = emb(ids)
    emb.backward(g)
    assert out.dtype == dtype
    assert_close(out, out_t.detach().numpy(), dtype, "forward", "embedding output")
    assert_close(emb.grads["weight"], ref.weight.grad.numpy(), dtype, "backward",
                 "embedding dweight")


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_linear_matches_torch(dtype, assert_close):
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (5, 3, 6)).astype(dtype)
    g = rng.standard_normal((5, 3, 4)).astype(dtype)
    ref = torch.nn.Linear(6, 4, dtype=getattr(torch, np.dtype(dtype).name))
    lin = Linear(6, 4, dtype=dtype)
    lin.load_state_dict(ref.state_dict())
    x_t = torch.tensor(x, requires_grad=True)
    out_t = ref(x_t)
    (out_t * torch.tensor(g)).sum().backward()
    out = lin(x)
    dx = lin.backward(g)
    assert out.dtype == dx.dtype == dtype
    assert_close(out, out_t.detach().numpy(), dtype, "forward", "linear output")
    assert_close(dx, x_t.grad.numpy(), dtype, "backward", "linear dx")
    assert_close(lin.grads["weight"], ref.weight.grad.numpy(), dtype, "backward", "linear dweight")
    assert_close(lin.grads["bias"], ref.bias.grad.numpy(), dtype, "backward", "linear dbias")


@needs_torch
def test_initialisation_follows_torch():
    """Embedding ~ N(0, 1); Linear ~ U(-1/sqrt(I), 1/sqrt(I)), as PyTorch initialises them."""
    w = Embedding(400, 50, seed=0).parameters()["weight"]
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02
    lin = Linear(64, 300, seed=0)
    bound = 1 / 8
    for name, p in lin.parameters().items():
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.95 * bound, name
    assert lin.parameters()["weight"].shape == tuple(torch.nn.Linear(64, 300).weight.shape)


# ----------------------------------------------------------------------------------------------
# The module API (the layers' own methods).

def test_module_api_like_the_layers():
    lin = Linear(3, 2, dtype=np.float64, seed=0)
    x = np.ones((4, 3))
    lin(x)
    lin.backward(np.ones((4, 2)))
    once = {k: g.copy() for k, g in lin.grads.items()}
    lin.backward(np.ones((4, 2)))  # the saved input is read only: backward twice adds twice
    for name, g in lin.grads.items():
        np.testing.assert_array_equal(g, 2 * once[name], err_msg=name)
    grads_before = lin.grads
    lin.zero_grad()
    assert lin.grads is grads_before and all(not g.any() for g in lin.grads.values())

    params = lin.parameters()
    state = lin.state_dict()
    params["weight"] += 1  # parameters() are live; state_dict() holds copies
    assert not np.array_equal(state["weight"], params["weight"])
    lin.load_state_dict(state)
    np.testing.assert_array_equal(params["weight"], state["weight"])
    with pytest.raises(KeyError, match="missing"):
        lin.load_state_dict({"weight": state["weight"]})

    lin.eval()
    lin(x)
    with pytest.raises(RuntimeError, match="eval mode"):
        lin.backward(np.ones((4, 2)))
    fresh = Embedding(3, 2)
    with pytest.raises(RuntimeError, match="no training-mode forward"):
        fresh.backward(np.ones((1, 2)))


def test_same_seed_same_weights():
    a, b = Linear(3, 4, seed=7), Linear(3, 4, seed=7)
    np.testing.assert_array_equal(a.parameters()["weight"], b.parameters()["weight"])
    assert a.parameters()["weight"].dtype == np.float32


def test_input_errors():
    emb, lin = Embedding(4, 2), Linear(3, 2)
    with pytest.raises(TypeError, match="ids: expected an array of integer ids"):
        emb(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"ids: expected ids in \[0, 4\), got values in \[-1, 4\]"):
        emb(np.array([-1, 4]))
    with pytest.raises(TypeError, match="x: expected a floating-point array"):
        lin(np.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 3\), got \(2, 4\)"):
        lin(np.ones((2, 4)))
    lin(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(2, 2\), got \(2, 3\)"):
        lin.backward(np.ones((2, 3)))
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match=r"grad_output: expected shape \(2, 2\)"):
        emb.backward(np.ones((3, 2)))
    with pytest.raises(ValueError, match="embedding_dim: expected an integer >= 1"):
        Embedding(4, 0)
    with pytest.raises(ValueError, match="padding_idx"):
        Embedding(4, 2, padding_idx=4)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        Linear(2, 2, dtype=np.int32)


def test_modules_compose_with_a_layer(assert_close):
    """Embedding -> GRU -> Linear, backpropagated by hand, against finite differences through
    the whole chain (a few entries of each parameter)."""
    rng = np.random.default_rng(5)
    emb = Embedding(6, 3, dtype=np.float64, seed=0)
    gru = rnnfast.GRU(3, 4, dtype=np.float64, seed=1)
    lin = Linear(4, 2, dtype=np.float64, seed=2)
    ids = rng.integers(0, 6, size=(5, 2))
    g = rng.standard_normal((5, 2, 2))

    def run(train):
        for m in (emb, gru, lin):
            m.train(train)
        y, _ = gru(emb(ids))
        return lin(y)

    def loss():
        return float(np.sum(run(False) * g))

    run(True)
    dy = lin.backward(g)
    dx, _ = gru.backward(dy)
    emb.backward(dx)
    for module in (emb, gru, lin):
        for name, p in module.parameters().items():
            picks = [tuple(rng.integers(0, n) for n in p.shape) for _ in range(3)]
            expected = numeric_gradient(loss, p, picks)
            actual = np.zeros_like(p)
            for index in picks:
                actual[index] = module.grads[name][index]
            assert_close(actual, expected, "float64", "backward", f"{type(module).__name__} {name}")
