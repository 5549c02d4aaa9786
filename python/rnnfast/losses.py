"""Softmax cross-entropy over a vocabulary, masked on padding, with its gradient.

The loss is the weighted mean of the per-position negative log-likelihoods,
``sum(w * nll) / sum(w)`` with ``w`` the mask (ones when there is none): for a 0/1 mask this is
torch.nn.functional.cross_entropy with ``ignore_index`` on the masked positions. A mask with no
weight at all gives a loss of 0 and a zero gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._convert import as_float, compute_dtype
from .nn import as_ids

__all__ = ["log_softmax", "softmax_cross_entropy"]


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(softmax(logits)) along ``axis``, computed without overflow; float arrays only."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softmax_cross_entropy(logits: Any, targets: Any, mask: Any = None) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer targets, over unmasked positions.

    Parameters
    ----------
    logits : floats [..., V]
    targets : ints [...] in [0, V) wherever the mask is non-zero (any value elsewhere)
    mask : None, or bools or non-negative float weights [...]; 0 ignores a position (padding)

    Returns
    -------
    loss : float, ``sum(mask * -log softmax(logits)[target]) / sum(mask)``
    grad_logits : [..., V] in the dtype of logits, d loss / d logits
    """
    dtype = compute_dtype("logits", logits)
    z = as_float("logits", logits, dtype)
    if z.ndim < 1 or z.shape[-1] < 1:
        raise ValueError(f"logits: expected shape (..., V) with V >= 1, got {z.shape}")
    lead, V = z.shape[:-1], z.shape[-1]
    y = as_ids("targets", targets)
    if y.shape != lead:
        raise ValueError(f"targets: expected shape {lead}, got {y.shape}")
    if mask is None:
        w = np.ones(lead, np.float64)
    else:
        w = np.asarray(mask, dtype=np.float64)
        if w.shape != lead:
            raise ValueError(f"mask: expected shape {lead}, got {w.shape}")
        if np.any(w < 0):
            raise ValueError("mask: expected non-negative weights")
    counted = w > 0
    if counted.any():
        y_counted = y[counted]
        if y_counted.min() < 0 or y_counted.max() >= V:
            raise ValueError(f"targets: expected ids in [0, {V}) at unmasked positions, got values "
                             f"in [{y_counted.min()}, {y_counted.max()}]")
    total = w.sum()
    if total == 0:
        return 0.0, np.zeros_like(z)
    y = np.where(counted, y, 0)
    logp = log_softmax(z)
    picked = np.take_along_axis(logp, y[..., None], axis=-1)[..., 0]
    loss = float(-(w * picked).sum() / total)
    grad = np.exp(logp)
    np.put_along_axis(grad, y[..., None], np.take_along_axis(grad, y[..., None], axis=-1) - 1, -1)
    grad *= (w / total).astype(dtype)[..., None]
    return loss, grad
