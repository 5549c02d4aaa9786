"""NumPy reference of rnnfast's kernels: the definition of "correct".

The same functions, arguments, cache fields and results as the compiled ``rnnfast._core``, written
to be read next to the equations rather than to be fast.

Conventions
-----------
T steps, B batch rows, I input features, H hidden units, P the width of h (P = H unless an LSTM
has a projection), G gates (LSTM 4: i, f, g, o; GRU 3: r, z, n; RNN 1). PyTorch's weight layout:
w_ih [G*H, I], w_hh [G*H, P], b_ih and b_hh [G*H], w_hr [P, H], w_peep [3, H] (rows p_i, p_f, p_o).
All arrays share x's dtype, float32 or float64, and the arithmetic runs in that dtype. Sizes are
read from x [T, B, I], w_ih [G*H, I] and w_hr [P, H]; every other array is checked against them.

Time: steps run t = 0..T-1, or T-1..0 with ``reverse``. Row b is active at time t iff
t < lengths[b] (every row when ``lengths`` is None). An inactive row outputs 0, carries its state
unchanged, has zero gates in the cache, ignores dy and gets dx = 0. A cache holds the state after
each time step, in time order; the state entering a step is h0 for the first processed step, else
the state after the step processed just before.

Each forward runs one ``_<cell>_step`` per time step through ``_scan``; each backward walks the
steps in the opposite order through ``_scan_backward``, carrying dh (and dc), then forms the weight
gradients as sums over all steps of outer products.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._checks import (
    array_or_zeros,
    check_array,
    check_cache,
    check_choice,
    check_gate_rows,
    check_lengths,
    check_optional,
    check_sequence,
)

__all__ = [
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
]


# Pointwise maths. Derivatives are taken from the saved outputs: tanh' = 1 - y^2, σ' = y (1 - y).

def _sigmoid(a: np.ndarray) -> np.ndarray:
    """σ(a) = 1 / (1 + exp(-a)), evaluated so that exp never overflows."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


def _relu_grad(y: np.ndarray) -> np.ndarray:
    return (y > 0).astype(y.dtype)


def _tanh_grad(y: np.ndarray) -> np.ndarray:
    return 1 - y * y


# The RNN's nonlinearities: name -> (act, act' written in terms of y = act(a)).
_ACTIVATIONS = {"tanh": (np.tanh, _tanh_grad), "relu": (_relu, _relu_grad)}


# Time: the order of the steps, which rows are active, the state entering each step.

def _time_steps(T: int, reverse: bool) -> range:
    """Time indices in processing order."""
    return range(T - 1, -1, -1) if reverse else range(T)


def _active(lengths: np.ndarray | None, T: int, B: int) -> np.ndarray:
    """[T, B, 1] bool: row b is active at time t iff t < lengths[b]."""
    if lengths is None:
        return np.ones((T, B, 1), dtype=bool)
    return (np.arange(T)[:, None] < lengths[None, :])[:, :, None]


def _previous(s0: np.ndarray, s: np.ndarray, reverse: bool) -> np.ndarray:
    """The state entering every step [T, B, .], from s0 [B, .] and the saved states s [T, B, .]."""
    if reverse:
        return np.concatenate([s[1:], s0[None]])
    return np.concatenate([s0[None], s[:-1]])


def _stack(per_step: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """T tuples of [B, .] arrays -> a tuple of [T, B, .] arrays."""
    return tuple(np.stack(seq) for seq in zip(*per_step))


def _scan(step: Callable, ax: np.ndarray, state0: tuple, active: np.ndarray,
          reverse: bool) -> tuple[tuple, tuple, tuple]:
    """Run one cell over time.

    Parameters
    ----------
    step : callable
        ``step(ax_t, *state) -> (new_state, saved)``, both tuples of [B, .] arrays; computed for
        every row, active or not.
    ax : ndarray [T, B, G*H]
        x_t W_ih^T + b_ih for every step.
    state0 : tuple of ndarray [B, .]
        The initial state: (h0,) or (h0, c0).
    active : ndarray [T, B, 1] bool
    reverse : bool

    Returns
    -------
    states : tuple of ndarray [T, B, .]
        The state after every step, carried through inactive steps.
    saved : tuple of ndarray [T, B, .]
        What ``step`` saved, 0 where inactive.
    final : tuple of ndarray [B, .]
        The state after the last processed step.
    """
    T = ax.shape[0]
    state, states, saved = state0, [()] * T, [()] * T
    for t in _time_steps(T, reverse):
        new_state, new_saved = step(ax[t], *state)
        on = active[t]
        state = tuple(np.where(on, new, old) for new, old in zip(new_state, state))
        states[t] = state
        saved[t] = tuple(np.where(on, s, 0) for s in new_saved)
    return _stack(states), _stack(saved), state


def _scan_backward(step: Callable, dy: np.ndarray, dstate_n: tuple, active: np.ndarray,
                   reverse: bool) -> tuple[tuple, tuple]:
    """Walk time against the processing order, carrying the gradient of the state.

    Parameters
    ----------
    step : callable
        ``step(t, dh, *drest) -> (grads, dprev)``: dh [B, P] is the whole gradient reaching h_t
        (from y_t and from the step processed after t), drest that of the rest of the state;
        grads is a tuple of [B, .] arrays for the weight gradients, dprev the gradient of the
        state entering step t.
    dy : ndarray [T, B, P]
    dstate_n : tuple of ndarray [B, .]
        The gradient of the final state: (dh_n,) or (dh_n, dc_n).
    active : ndarray [T, B, 1] bool
    reverse : bool

    Returns
    -------
    grads : tuple of ndarray [T, B, .]
        What ``step`` returned, 0 where inactive.
    dstate0 : tuple of ndarray [B, .]
        The gradient of the initial state.
    """
    T = dy.shape[0]
    dstate, grads = dstate_n, [()] * T
    for t in reversed(_time_steps(T, reverse)):
        on = active[t]
        dstate = (dstate[0] + np.where(on, dy[t], 0), *dstate[1:])
        new_grads, dprev = step(t, *dstate)
        dstate = tuple(np.where(on, new, old) for new, old in zip(dprev, dstate))
        grads[t] = tuple(np.where(on, g, 0) for g in new_grads)
    return _stack(grads), dstate


def _outer_sum(d: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Sum over t and b of d[t, b]^T a[t, b]: [T, B, M], [T, B, N] -> [M, N]."""
    return d.reshape(-1, d.shape[-1]).T @ a.reshape(-1, a.shape[-1])


# Argument checks shared by the forward and backward of each cell.

def _check_weights(G: int, H: int, P: int, dtype: np.dtype, w_hh: object, b_ih: object,
                   b_hh: object) -> tuple[np.ndarray, np.ndarray]:
    """Check w_hh [G*H, P] and the biases [G*H] or None; return the biases."""
    check_array("w_hh", w_hh, dtype, (G * H, P))
    return (array_or_zeros("b_ih", b_ih, dtype, (G * H,)),
            array_or_zeros("b_hh", b_hh, dtype, (G * H,)))


def _check_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, lengths):
    """Check an LSTM call's arrays; return (T, B, H, P), b_ih, b_hh and lengths."""
    T, B, I = check_sequence(x)
    H = check_gate_rows("w_ih", w_ih, x.dtype, 4, I)
    P = H if w_hr is None else check_array("w_hr", w_hr, x.dtype, ("P", H)).shape[0]
    b_ih, b_hh = _check_weights(4, H, P, x.dtype, w_hh, b_ih, b_hh)
    check_optional("w_peep", w_peep, x.dtype, (3, H))
    check_array("h0", h0, x.dtype, (B, P))
    check_array("c0", c0, x.dtype, (B, H))
    return (T, B, H, P), b_ih, b_hh, check_lengths(lengths, T, B)


def _check_gru_rnn(G, x, h0, w_ih, w_hh, b_ih, b_hh, lengths):
    """Check a GRU (G = 3) or RNN (G = 1) call's arrays; return (T, B, H), b_ih, b_hh, lengths."""
    T, B, I = check_sequence(x)
    H = check_gate_rows("w_ih", w_ih, x.dtype, G, I)
    b_ih, b_hh = _check_weights(G, H, H, x.dtype, w_hh, b_ih, b_hh)
    check_array("h0", h0, x.dtype, (B, H))
    return (T, B, H), b_ih, b_hh, check_lengths(lengths, T, B)


# LSTM

def _lstm_step(ax, h_prev, c_prev, w_hh, b_hh, w_hr, w_peep, coupled):
    """One LSTM step on every row.

    ax [B, 4H] = x_t W_ih^T + b_ih; h_prev [B, P]; c_prev [B, H]; w_peep [3, H] (zeros when the
    cell has no peepholes). Returns ((h [B, P], c [B, H]), (gates [B, 4H],)).
    """
    a_i, a_f, a_g, a_o = np.split(ax + h_prev @ w_hh.T + b_hh, 4, axis=-1)
    p_i, p_f, p_o = w_peep
    i = _sigmoid(a_i + p_i * c_prev)
    f = 1 - i if coupled else _sigmoid(a_f + p_f * c_prev)
    g = np.tanh(a_g)
    c = f * c_prev + i * g
    o = _sigmoid(a_o + p_o * c)
    m = o * np.tanh(c)
    h = m if w_hr is None else m @ w_hr.T
    return (h, c), (np.concatenate([i, f, g, o], axis=-1),)


def _lstm_step_backward(dh, dc, gates, c, c_prev, w_hh, w_hr, w_peep, coupled):
    """Backward of one LSTM step.

    dh [B, P] and dc [B, H] are the gradients reaching h_t and c_t; gates [B, 4H], c [B, H] and
    c_prev [B, H] come from the cache. Returns ((da [B, 4H], dh), (dh_prev [B, P],
    dc_prev [B, H])), da being the gradient of the pre-activations a_i, a_f, a_g, a_o.
    """
    i, f, g, o = np.split(gates, 4, axis=-1)
    p_i, p_f, p_o = w_peep
    tanh_c = np.tanh(c)
    dm = dh if w_hr is None else dh @ w_hr              # h = m W_hr^T
    da_o = dm * tanh_c * o * (1 - o)                    # m = o tanh(c), o = σ(a_o + p_o c)
    dc = dc + dm * o * (1 - tanh_c * tanh_c) + da_o * p_o
    di, df = dc * g, dc * c_prev                        # c = f c_prev + i g
    if coupled:                                         # f = 1 - i: a_f plays no part
        da_i, da_f = (di - df) * i * (1 - i), np.zeros_like(df)
    else:
        da_i, da_f = di * i * (1 - i), df * f * (1 - f)
    da_g = dc * i * (1 - g * g)
    da = np.concatenate([da_i, da_f, da_g, da_o], axis=-1)
    dc_prev = dc * f + da_i * p_i + da_f * p_f
    return (da, dh), (da @ w_hh, dc_prev)


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, w_hr=None, w_peep=None,
                 coupled=False, reverse=False, lengths=None, training=False):
    """One LSTM layer over a sequence.

    i = σ(a_i + p_i c_prev), f = σ(a_f + p_f c_prev) (or 1 - i when coupled), g = tanh(a_g),
    c = f c_prev + i g, o = σ(a_o + p_o c), h = (o tanh(c)) W_hr^T (or without W_hr), with
    a = x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh split in a_i, a_f, a_g, a_o.

    Parameters
    ----------
    x : ndarray [T, B, I]
    h0 : ndarray [B, P]
    c0 : ndarray [B, H]
    w_ih : ndarray [4H, I]
    w_hh : ndarray [4H, P]
    b_ih, b_hh : ndarray [4H] or None
        None is a zero bias.
    w_hr : ndarray [P, H] or None
        Projection of the output; None: P = H and no projection.
    w_peep : ndarray [3, H] or None
        Peephole weights p_i, p_f, p_o; None: no peepholes.
    coupled : bool
        Couple the input and forget gates: f = 1 - i.
    reverse : bool
        Process t = T-1..0.
    lengths : ndarray [B] of int64 or None
        Row b is active at time t iff t < lengths[b]; None: every row has length T.
    training : bool
        Return the cache that ``lstm_backward`` needs.

    Returns
    -------
    y : ndarray [T, B, P]
        h_t at every active step, 0 elsewhere.
    h_n : ndarray [B, P]
    c_n : ndarray [B, H]
    cache : dict or None
        None unless training; else gates [T, B, 4H] (i, f, g, o after their nonlinearity, 0 where
        inactive), c [T, B, H] and h [T, B, P] (the state after each step).
    """
    (T, B, H, _), b_ih, b_hh, lengths = _check_lstm(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                                    w_peep, lengths)
    peep = array_or_zeros("w_peep", w_peep, x.dtype, (3, H))
    active = _active(lengths, T, B)

    def step(ax_t, h_prev, c_prev):
        return _lstm_step(ax_t, h_prev, c_prev, w_hh, b_hh, w_hr, peep, coupled)

    (h, c), (gates,), (h_n, c_n) = _scan(step, x @ w_ih.T + b_ih, (h0, c0), active, reverse)
    cache = {"gates": gates, "c": c, "h": h} if training else None
    return np.where(active, h, 0), h_n, c_n, cache


def lstm_backward(dy, dh_n, dc_n, x, h0, c0, w_ih, w_hh, cache, *, w_hr=None, w_peep=None,
                  coupled=False, reverse=False, lengths=None):
    """Gradients of one LSTM layer, from the cache of ``lstm_forward(..., training=True)``.

    Parameters
    ----------
    dy : ndarray [T, B, P] or None
        dL/dy; ignored where inactive; None is zeros.
    dh_n : ndarray [B, P] or None
    dc_n : ndarray [B, H] or None
    x, h0, c0, w_ih, w_hh, w_hr, w_peep, coupled, reverse, lengths
        As given to ``lstm_forward``.
    cache : dict
        From ``lstm_forward``; read, never modified.

    Returns
    -------
    dict
        dx [T, B, I] (0 where inactive), dh0 [B, P], dc0 [B, H], dw_ih [4H, I], dw_hh [4H, P],
        db_ih [4H], db_hh [4H]; dw_hr [P, H] when w_hr is given and dw_peep [3, H] when w_peep
        is. With coupled, the f rows of dw_ih, dw_hh, db_ih, db_hh are 0.
    """
    (T, B, H, P), _, _, lengths = _check_lstm(x, h0, c0, w_ih, w_hh, None, None, w_hr, w_peep,
                                              lengths)
    dy = array_or_zeros("dy", dy, x.dtype, (T, B, P))
    dh_n = array_or_zeros("dh_n", dh_n, x.dtype, (B, P))
    dc_n = array_or_zeros("dc_n", dc_n, x.dtype, (B, H))
    cache = check_cache(cache, x.dtype, {"gates": (T, B, 4 * H), "c": (T, B, H), "h": (T, B, P)})
    peep = array_or_zeros("w_peep", w_peep, x.dtype, (3, H))
    gates, c = cache["gates"], cache["c"]
    c_prev = _previous(c0, c, reverse)
    h_prev = _previous(h0, cache["h"], reverse)

    def step(t, dh, dc):
        return _lstm_step_backward(dh, dc, gates[t], c[t], c_prev[t], w_hh, w_hr, peep, coupled)

    (da, dh), (dh0, dc0) = _scan_backward(step, dy, (dh_n, dc_n), _active(lengths, T, B), reverse)
    grads = {"dx": da @ w_ih, "dh0": dh0, "dc0": dc0, "dw_ih": _outer_sum(da, x),
             "dw_hh": _outer_sum(da, h_prev), "db_ih": da.sum(axis=(0, 1)),
             "db_hh": da.sum(axis=(0, 1))}
    if w_hr is not None:                                # h = m W_hr^T, m = o tanh(c)
        o = gates[..., 3 * H:]
        grads["dw_hr"] = _outer_sum(dh, o * np.tanh(c))
    if w_peep is not None:                              # p_i c_prev, p_f c_prev, p_o c
        da_i, da_f, _, da_o = np.split(da, 4, axis=-1)
        grads["dw_peep"] = np.stack([(da_i * c_prev).sum(axis=(0, 1)),
                                     (da_f * c_prev).sum(axis=(0, 1)),
                                     (da_o * c).sum(axis=(0, 1))])
    return grads


# GRU

def _gru_step(ax, h_prev, w_hh, b_hh, linear_before_reset):
    """One GRU step on every row.

    ax [B, 3H] = x_t W_ih^T + b_ih; h_prev [B, H]. Returns ((h [B, H],), (gates [B, 3H], hn [B, H]))
    with linear_before_reset, else ((h,), (gates,)).
    """
    H = h_prev.shape[-1]
    xr, xz, xn = np.split(ax, 3, axis=-1)
    hr, hz, hn = np.split(h_prev @ w_hh.T + b_hh, 3, axis=-1)
    r = _sigmoid(xr + hr)
    z = _sigmoid(xz + hz)
    if linear_before_reset:
        n = np.tanh(xn + r * hn)
    else:
        n = np.tanh(xn + (r * h_prev) @ w_hh[2 * H:].T + b_hh[2 * H:])
    h = (1 - z) * n + z * h_prev
    gates = np.concatenate([r, z, n], axis=-1)
    return (h,), ((gates, hn) if linear_before_reset else (gates,))


def _gru_step_backward(dh, gates, hn, h_prev, w_hh, linear_before_reset):
    """Backward of one GRU step.

    dh [B, H] is the gradient reaching h_t; gates [B, 3H], hn [B, H] (or None) and h_prev [B, H]
    come from the cache. Returns ((da_x [B, 3H], da_h [B, 3H]), (dh_prev [B, H],)): da_x is the
    gradient of x_t W_ih^T + b_ih, da_h that of the recurrent terms: h_prev W_hh^T + b_hh, or
    with linear_before_reset=False, h_prev W_hh^T + b_hh for r, z and (r h_prev) W_hn^T + b_hn
    for n.
    """
    H = dh.shape[-1]
    r, z, n = np.split(gates, 3, axis=-1)
    da_n = dh * (1 - z) * (1 - n * n)                   # h = (1 - z) n + z h_prev, n = tanh(.)
    da_z = dh * (h_prev - n) * z * (1 - z)
    if linear_before_reset:                             # n = tanh(xn + r hn)
        da_r = da_n * hn * r * (1 - r)
        da_h = np.concatenate([da_r, da_z, da_n * r], axis=-1)
        dh_prev = dh * z + da_h @ w_hh
    else:                                               # n = tanh(xn + (r h_prev) W_hn^T + b_hn)
        d_rh = da_n @ w_hh[2 * H:]
        da_r = d_rh * h_prev * r * (1 - r)
        da_h = np.concatenate([da_r, da_z, da_n], axis=-1)
        dh_prev = dh * z + da_h[:, :2 * H] @ w_hh[:2 * H] + d_rh * r
    da_x = np.concatenate([da_r, da_z, da_n], axis=-1)
    return (da_x, da_h), (dh_prev,)


def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, linear_before_reset=True,
                reverse=False, lengths=None, training=False):
    """One GRU layer over a sequence.

    r = σ(xr + hr), z = σ(xz + hz), n = tanh(xn + r hn) (linear_before_reset, PyTorch) or
    tanh(xn + (r h_prev) W_hn^T + b_hn) (Cho 2014, ONNX linear_before_reset=0),
    h = (1 - z) n + z h_prev, with xr, xz, xn = x_t W_ih^T + b_ih and hr, hz, hn =
    h_prev W_hh^T + b_hh.

    Parameters
    ----------
    x : ndarray [T, B, I]
    h0 : ndarray [B, H]
    w_ih : ndarray [3H, I]
    w_hh : ndarray [3H, H]
    b_ih, b_hh : ndarray [3H] or None
        None is a zero bias.
    linear_before_reset : bool
    reverse, lengths, training
        As in ``lstm_forward``.

    Returns
    -------
    y : ndarray [T, B, H]
    h_n : ndarray [B, H]
    cache : dict or None
        None unless training; else gates [T, B, 3H] (r, z, n), h [T, B, H] and, with
        linear_before_reset, hn [T, B, H] (h_prev W_hn^T + b_hn; 0 where inactive).
    """
    (T, B, _), b_ih, b_hh, lengths = _check_gru_rnn(3, x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
    active = _active(lengths, T, B)

    def step(ax_t, h_prev):
        return _gru_step(ax_t, h_prev, w_hh, b_hh, linear_before_reset)

    (h,), saved, (h_n,) = _scan(step, x @ w_ih.T + b_ih, (h0,), active, reverse)
    cache = None
    if training:
        cache = {"gates": saved[0], "h": h}
        if linear_before_reset:
            cache["hn"] = saved[1]
    return np.where(active, h, 0), h_n, cache


def gru_backward(dy, dh_n, x, h0, w_ih, w_hh, cache, *, linear_before_reset=True, reverse=False,
                 lengths=None):
    """Gradients of one GRU layer, from the cache of ``gru_forward(..., training=True)``.

    Parameters
    ----------
    dy : ndarray [T, B, H] or None
    dh_n : ndarray [B, H] or None
    x, h0, w_ih, w_hh, linear_before_reset, reverse, lengths
        As given to ``gru_forward``.
    cache : dict
        From ``gru_forward``; read, never modified.

    Returns
    -------
    dict
        dx [T, B, I], dh0 [B, H], dw_ih [3H, I], dw_hh [3H, H], db_ih [3H], db_hh [3H].
    """
    (T, B, H), _, _, lengths = _check_gru_rnn(3, x, h0, w_ih, w_hh, None, None, lengths)
    dy = array_or_zeros("dy", dy, x.dtype, (T, B, H))
    dh_n = array_or_zeros("dh_n", dh_n, x.dtype, (B, H))
    fields = {"gates": (T, B, 3 * H), "h": (T, B, H)}
    if linear_before_reset:
        fields["hn"] = (T, B, H)
    cache = check_cache(cache, x.dtype, fields)
    gates = cache["gates"]
    hn = cache["hn"] if linear_before_reset else None
    h_prev = _previous(h0, cache["h"], reverse)

    def step(t, dh):
        hn_t = hn[t] if linear_before_reset else None
        return _gru_step_backward(dh, gates[t], hn_t, h_prev[t], w_hh, linear_before_reset)

    (da_x, da_h), (dh0,) = _scan_backward(step, dy, (dh_n,), _active(lengths, T, B), reverse)
    r = gates[..., :H]
    w_hn_input = h_prev if linear_before_reset else r * h_prev
    dw_hh = np.concatenate([_outer_sum(da_h[..., :2 * H], h_prev),
                            _outer_sum(da_h[..., 2 * H:], w_hn_input)])
    return {"dx": da_x @ w_ih, "dh0": dh0, "dw_ih": _outer_sum(da_x, x), "dw_hh": dw_hh,
            "db_ih": da_x.sum(axis=(0, 1)), "db_hh": da_h.sum(axis=(0, 1))}


# RNN

def rnn_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", reverse=False,
                lengths=None, training=False):
    """One Elman RNN layer over a sequence: h = act(x_t W_ih^T + b_ih + h_prev W_hh^T + b_hh).

    Parameters
    ----------
    x : ndarray [T, B, I]
    h0 : ndarray [B, H]
    w_ih : ndarray [H, I]
    w_hh : ndarray [H, H]
    b_ih, b_hh : ndarray [H] or None
        None is a zero bias.
    nonlinearity : {"tanh", "relu"}
    reverse, lengths, training
        As in ``lstm_forward``.

    Returns
    -------
    y : ndarray [T, B, H]
    h_n : ndarray [B, H]
    cache : dict or None
        None unless training; else h [T, B, H].
    """
    act, _ = _ACTIVATIONS[check_choice("nonlinearity", nonlinearity, tuple(_ACTIVATIONS))]
    (T, B, _), b_ih, b_hh, lengths = _check_gru_rnn(1, x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
    active = _active(lengths, T, B)

    def step(ax_t, h_prev):
        return (act(ax_t + h_prev @ w_hh.T + b_hh),), ()

    (h,), _, (h_n,) = _scan(step, x @ w_ih.T + b_ih, (h0,), active, reverse)
    return np.where(active, h, 0), h_n, ({"h": h} if training else None)


def rnn_backward(dy, dh_n, x, h0, w_ih, w_hh, cache, *, nonlinearity="tanh", reverse=False,
                 lengths=None):
    """Gradients of one RNN layer, from the cache of ``rnn_forward(..., training=True)``.

    Parameters
    ----------
    dy : ndarray [T, B, H] or None
    dh_n : ndarray [B, H] or None
    x, h0, w_ih, w_hh, nonlinearity, reverse, lengths
        As given to ``rnn_forward``.
    cache : dict
        From ``rnn_forward``; read, never modified.

    Returns
    -------
    dict
        dx [T, B, I], dh0 [B, H], dw_ih [H, I], dw_hh [H, H], db_ih [H], db_hh [H].
    """
    _, act_grad = _ACTIVATIONS[check_choice("nonlinearity", nonlinearity, tuple(_ACTIVATIONS))]
    (T, B, H), _, _, lengths = _check_gru_rnn(1, x, h0, w_ih, w_hh, None, None, lengths)
    dy = array_or_zeros("dy", dy, x.dtype, (T, B, H))
    dh_n = array_or_zeros("dh_n", dh_n, x.dtype, (B, H))
    h = check_cache(cache, x.dtype, {"h": (T, B, H)})["h"]
    h_prev = _previous(h0, h, reverse)

    def step(t, dh):
        da = dh * act_grad(h[t])                        # h = act(a)
        return (da,), (da @ w_hh,)

    (da,), (dh0,) = _scan_backward(step, dy, (dh_n,), _active(lengths, T, B), reverse)
    return {"dx": da @ w_ih, "dh0": dh0, "dw_ih": _outer_sum(da, x),
            "dw_hh": _outer_sum(da, h_prev), "db_ih": da.sum(axis=(0, 1)),
            "db_hh": da.sum(axis=(0, 1))}
