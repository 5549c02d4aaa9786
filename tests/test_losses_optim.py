"""rnnfast.losses and rnnfast.optim: the masked cross-entropy's gradient against finite differences
and torch.nn.functional.cross_entropy; clip_grad_norm against torch.nn.utils.clip_grad_norm_;
Adam and SGD (momentum, Nesterov, weight decay) steps against torch.optim's."""

import math

import numpy as np
import pytest

import rnnfast
from rnnfast.losses import log_softmax, softmax_cross_entropy
from rnnfast.optim import SGD, Adam, clip_grad_norm
from test_nn import needs_torch, numeric_gradient, torch

V = 5


def _case(seed=0, shape=(3, 4)):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape + (V,)) * 2
    targets = rng.integers(0, V, size=shape)
    mask = rng.random(shape) < 0.7
    mask.flat[0] = True
    return logits, targets, mask


# ----------------------------------------------------------------------------------------------
# Cross-entropy.

@pytest.mark.parametrize("mask_kind", ["none", "bool", "weights"])
def test_cross_entropy_gradient_matches_finite_differences(mask_kind, assert_close):
    logits, targets, mask = _case()
    weights = {"none": None, "bool": mask,
               "weights": np.random.default_rng(1).uniform(0, 2, mask.shape)}[mask_kind]
    loss, grad = softmax_cross_entropy(logits, targets, weights)
    expected = numeric_gradient(lambda: softmax_cross_entropy(logits, targets, weights)[0], logits)
    assert_close(grad, expected, "float64", "backward", "d loss / d logits")
    w = np.ones(targets.shape) if weights is None else np.asarray(weights, float)
    nll = -np.take_along_axis(log_softmax(logits), targets[..., None], -1)[..., 0]
    assert loss == pytest.approx(float((w * nll).sum() / w.sum()), rel=1e-12)


def test_masked_positions_are_ignored():
    logits, targets, mask = _case(2)
    loss, grad = softmax_cross_entropy(logits, targets, mask)
    noisy_targets = np.where(mask, targets, 10_000)  # out of range where masked: allowed
    noisy_logits = np.where(mask[..., None], logits, 1e6)
    loss2, grad2 = softmax_cross_entropy(noisy_logits, noisy_targets, mask)
    assert loss2 == loss
    np.testing.assert_array_equal(grad2[mask], grad[mask])
    np.testing.assert_array_equal(grad2[~mask], 0)
    loss0, grad0 = softmax_cross_entropy(logits, targets, np.zeros(mask.shape))
    assert loss0 == 0.0 and grad0.shape == logits.shape and not grad0.any()


def test_cross_entropy_is_stable_and_keeps_the_dtype():
    logits = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)
    loss, grad = softmax_cross_entropy(logits, np.array([1]))
    assert loss == pytest.approx(1000.0) and grad.dtype == np.float32
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0]], atol=1e-6)
    with pytest.raises(ValueError, match=r"targets: expected ids in \[0, 3\) at unmasked"):
        softmax_cross_entropy(logits, np.array([3]))
    with pytest.raises(ValueError, match=r"targets: expected shape \(1,\), got \(2,\)"):
        softmax_cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(TypeError, match="targets: expected an array of integer ids"):
        softmax_cross_entropy(logits, np.array([1.0]))


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_matches_torch(dtype, assert_close):
    logits, targets, mask = _case(3, shape=(6, 7))
    logits = logits.astype(dtype)
    loss, grad = softmax_cross_entropy(logits, targets, mask)
    z = torch.tensor(logits, requires_grad=True)
    t = torch.tensor(np.where(mask, targets, -100))  # ignore_index: torch's padding mask
    expected = torch.nn.functional.cross_entropy(z.reshape(-1, V), t.reshape(-1), ignore_index=-100)
    expected.backward()
    assert_close(np.array(loss), expected.detach().numpy(), dtype, "forward", "loss")
    assert_close(grad, z.grad.numpy(), dtype, "backward", "d loss / d logits")


# ----------------------------------------------------------------------------------------------
# clip_grad_norm.

def _grads(seed, scale):
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((3, 4)) * scale, "b": rng.standard_normal(5) * scale}


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf], ids=["L2", "L1", "inf"])
@pytest.mark.parametrize("scale", [0.01, 10.0], ids=["below", "above"])
def test_clip_grad_norm_matches_torch(norm_type, scale, assert_close):
    grads = _grads(0, scale)
    original = {k: g.copy() for k, g in grads.items()}
    total = clip_grad_norm(grads, 1.0, norm_type)
    flat = np.concatenate([g.ravel() for g in original.values()])
    assert total == pytest.approx(np.linalg.norm(flat, ord=norm_type), rel=1e-12)
    clipped = np.concatenate([g.ravel() for g in grads.values()])
    if scale < 1:
        np.testing.assert_array_equal(clipped, flat)
    else:
        assert np.linalg.norm(clipped, ord=norm_type) == pytest.approx(1.0, rel=1e-5)
    if torch is not None:
        tensors = [torch.tensor(g) for g in original.values()]
        for t in tensors:
            t.grad = t.clone()
        expected = torch.nn.utils.clip_grad_norm_(tensors, 1.0, norm_type)
        assert total == pytest.approx(float(expected), rel=1e-12)
        for (name, g), t in zip(grads.items(), tensors):
            assert_close(g, t.grad.numpy(), "float64", "forward", f"clipped {name}")


def test_clip_grad_norm_is_the_norm_not_its_square():
    grads = [np.array([3.0, 4.0])]
    assert clip_grad_norm(grads, 100.0) == 5.0
    assert clip_grad_norm([np.array([30.0, 40.0], dtype=np.float32)], 5.0) == pytest.approx(50.0)
    assert clip_grad_norm({}, 1.0) == 0.0


# ----------------------------------------------------------------------------------------------
# Optimisers against torch.optim, three steps with different gradients.

OPTIMISERS = [
    pytest.param(SGD, "SGD", {"lr": 0.1}, id="sgd"),
    pytest.param(SGD, "SGD", {"lr": 0.1, "momentum": 0.9}, id="sgd-momentum"),
    pytest.param(SGD, "SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 0.1},
                 id="sgd-nesterov-wd"),
    pytest.param(Adam, "Adam", {"lr": 0.01}, id="adam"),
    pytest.param(Adam, "Adam", {"lr": 0.003, "betas": (0.8, 0.99), "eps": 1e-6,
                                "weight_decay": 0.01}, id="adam-options"),
]


def _expected_steps(torch_name, options, params, grad_steps):
    tensors = {k: torch.tensor(p, requires_grad=True) for k, p in params.items()}
    opt = getattr(torch.optim, torch_name)(list(tensors.values()), foreach=False, **options)
    for grads in grad_steps:
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
    return {k: t.detach().numpy() for k, t in tensors.items()}


@needs_torch
@pytest.mark.parametrize(("cls", "torch_name", "options"), OPTIMISERS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_optimiser_steps_match_torch(cls, torch_name, options, dtype, assert_close):
    params = {k: g.astype(dtype) for k, g in _grads(10, 1.0).items()}
    grad_steps = [{k: g.astype(dtype) for k, g in _grads(11 + s, 1.0).items()} for s in range(3)]
    expected = _expected_steps(torch_name, options, params, grad_steps)
    live = {k: p.copy() for k, p in params.items()}
    arrays = dict(live)
    opt = cls(live, **options)
    for grads in grad_steps:
        opt.step(grads)
    for name, p in live.items():
        assert p is arrays[name] and p.dtype == dtype  # updated in place
        assert_close(p, expected[name], dtype, "forward", f"{torch_name} {name}")


def test_adam_first_step_is_lr_times_sign():
    """With bias correction the first Adam step moves every weight by lr * sign(g) (up to eps)."""
    p = {"w": np.zeros(4)}
    Adam(p, lr=0.01).step({"w": np.array([3.0, -0.5, 1e-3, -20.0])})
    np.testing.assert_allclose(p["w"], [-0.01, 0.01, -0.01, 0.01], rtol=1e-4)


def test_optimiser_drives_a_layer():
    """``opt = Adam(layer.parameters())``; ``opt.step(layer.grads)`` trains the layer itself."""
    gru = rnnfast.GRU(3, 4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    target = np.full((6, 2, 4), 0.5)
    opt = Adam(gru.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        gru.zero_grad()
        y, _ = gru(x)
        losses.append(float(np.sum((y - target) ** 2)))
        gru.backward(2 * (y - target))
        clip_grad_norm(gru.grads, 5.0)
        opt.step(gru.grads)
    assert losses[-1] < losses[0] / 20


def test_optimiser_errors():
    p = {"w": np.zeros(3)}
    opt = SGD(p, lr=0.1)
    with pytest.raises(KeyError, match=r"missing keys \['w'\], unexpected keys \['v'\]"):
        opt.step({"v": np.zeros(3)})
    with pytest.raises(ValueError, match=r"grads\['w'\]: expected shape \(3,\), got \(2,\)"):
        opt.step({"w": np.zeros(2)})
    with pytest.raises(ValueError, match="lr: expected a positive learning rate"):
        Adam(p, lr=0)
    with pytest.raises(TypeError, match=r"params\['w'\]: expected a float NumPy array"):
        SGD({"w": np.zeros(3, dtype=int)}, lr=0.1)
    with pytest.raises(ValueError, match="nesterov: needs a momentum > 0"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="optimizer: expected 'adam' or 'sgd'"):
        rnnfast.optim.create("rmsprop", p, 0.1)
