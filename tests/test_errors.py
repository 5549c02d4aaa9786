"""Bad inputs raise the right exception, with a message naming the argument, from both
rnnfast._core and rnnfast.reference: TypeError for non-arrays and wrong or mixed dtypes,
ValueError for wrong ndim, sizes that disagree, empty sequences, bad lengths, unknown options
and (``_core`` only, which never copies) non-contiguous arrays.

Where a size could be read from either of two arrays (I from x or w_ih, H from w_ih or w_hh...),
a message naming either is accepted; every other message must name the changed argument.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from typing import Callable

import numpy as np
import pytest

T, B, I, H, P = 6, 3, 4, 5, 2  # all different, so that no wrong size passes for another
ALL = ("lstm-all", "gru", "rnn-tanh")
LSTM = ("lstm-all",)
BOTH = ("reference", "_core")


@dataclasses.dataclass(frozen=True)
class Bad:
    """One bad call: ``change(case, cache)`` returns the arguments that replace good ones."""

    id: str
    change: Callable
    error: type | tuple
    names: tuple  # the message must name one of these
    variants: tuple = ALL
    phase: str = "forward"  # or "backward": the forward runs first, with good arguments
    modules: tuple = BOTH
    says: str = ""  # a further word the message must contain


def _shrink(a, axis=-1):
    """``a`` with one entry less along ``axis``."""
    return np.take(a, np.arange(a.shape[axis] - 1), axis=axis)


def _grow(a, axis=-1):
    """``a`` with one entry more along ``axis``."""
    return np.concatenate([a, np.take(a, [0], axis=axis)], axis=axis)


def _strided(a):
    """The values of ``a`` in a non-contiguous view."""
    return np.repeat(a, 2, axis=-1)[..., ::2]


def _set(name, transform):
    """Replace argument ``name`` (an input, an output gradient or lengths) by transform(it)."""
    def change(case, cache):
        current = {**case.inputs, **case.output_grads, "lengths": case.lengths}[name]
        return {name: transform(current)}
    return change


def _set_cache(field, transform):
    """Replace field ``field`` of the cache by transform(it)."""
    return lambda case, cache: {"cache": {**cache, field: transform(cache[field])}}


def _set_many(**transforms):
    changes = [_set(name, transform) for name, transform in transforms.items()]
    return lambda case, cache: {k: v for c in changes for k, v in c(case, cache).items()}


BAD = [
    # ndim and sizes
    Bad("x-2d", _set("x", lambda x: x[0]), ValueError, ("x",)),
    Bad("x-input-size", _set("x", _shrink), ValueError, ("x", "w_ih")),
    Bad("w_ih-input-size", _set("w_ih", _shrink), ValueError, ("w_ih", "x")),
    Bad("w_ih-rows", _set("w_ih", lambda w: _shrink(w, 0)), ValueError, ("w_ih", "w_hh")),
    Bad("w_ih-3d", _set("w_ih", lambda w: w[None]), ValueError, ("w_ih",)),
    Bad("w_hh-columns", _set("w_hh", _shrink), ValueError, ("w_hh",)),
    Bad("w_hh-rows", _set("w_hh", lambda w: _shrink(w, 0)), ValueError, ("w_hh", "w_ih")),
    Bad("w_hh-1d", _set("w_hh", lambda w: w[0]), ValueError, ("w_hh",)),
    Bad("b_ih-short", _set("b_ih", _shrink), ValueError, ("b_ih",)),
    Bad("b_hh-long", _set("b_hh", _grow), ValueError, ("b_hh",)),
    Bad("b_ih-2d", _set("b_ih", lambda b: b[None]), ValueError, ("b_ih",)),
    Bad("h0-batch", _set("h0", lambda h: _shrink(h, 0)), ValueError, ("h0", "x")),
    Bad("h0-width", _set("h0", _grow), ValueError, ("h0", "w_hh", "w_hr")),
    Bad("h0-3d", _set("h0", lambda h: h[None]), ValueError, ("h0",)),
    Bad("c0-batch", _set("c0", lambda c: _shrink(c, 0)), ValueError, ("c0", "x"), LSTM),
    Bad("c0-width", _set("c0", _shrink), ValueError, ("c0", "w_ih"), LSTM),
    Bad("w_hr-columns", _set("w_hr", _shrink), ValueError, ("w_hr", "w_ih"), LSTM),
    Bad("w_hr-rows", _set("w_hr", lambda w: _grow(w, 0)), ValueError, ("w_hr", "w_hh", "h0"),
        LSTM),
    Bad("w_peep-rows", _set("w_peep", lambda w: _shrink(w, 0)), ValueError, ("w_peep",), LSTM),
    Bad("w_peep-columns", _set("w_peep", _grow), ValueError, ("w_peep",), LSTM),
    # empty sequences
    Bad("T-0", _set("x", lambda x: x[:0]), ValueError, ("x",)),
    Bad("B-0", _set_many(x=lambda x: x[:, :0], h0=lambda h: h[:0]), ValueError, ("x",),
        ("gru", "rnn-tanh")),
    Bad("B-0", _set_many(x=lambda x: x[:, :0], h0=lambda h: h[:0], c0=lambda c: c[:0]),
        ValueError, ("x",), LSTM),
    # dtypes and types
    Bad("w_hh-float32", _set("w_hh", lambda w: w.astype(np.float32)), TypeError, ("w_hh",)),
    Bad("h0-float32", _set("h0", lambda h: h.astype(np.float32)), TypeError, ("h0",)),
    Bad("b_ih-float32", _set("b_ih", lambda b: b.astype(np.float32)), TypeError, ("b_ih",)),
    Bad("w_peep-float32", _set("w_peep", lambda w: w.astype(np.float32)), TypeError,
        ("w_peep",), LSTM),
    Bad("x-float32", _set("x", lambda x: x.astype(np.float32)), TypeError, ("w_ih", "x")),
    Bad("x-float16", _set("x", lambda x: x.astype(np.float16)), TypeError, ("x",)),
    Bad("x-int64", _set("x", lambda x: x.astype(np.int64)), TypeError, ("x",)),
    Bad("w_ih-int32", _set("w_ih", lambda w: w.astype(np.int32)), TypeError, ("w_ih",)),
    Bad("x-object", _set("x", lambda x: x.astype(object)), TypeError, ("x",)),
    Bad("w_hh-object", _set("w_hh", lambda w: w.astype(object)), TypeError, ("w_hh",)),
    Bad("x-list", _set("x", lambda x: x.tolist()), TypeError, ("x",)),
    Bad("h0-list", _set("h0", lambda h: h.tolist()), TypeError, ("h0",)),
    Bad("w_hh-list", _set("w_hh", lambda w: w.tolist()), TypeError, ("w_hh",)),
    # lengths
    Bad("lengths-0", _set("lengths", lambda n: np.where(n == 1, 0, n)), ValueError,
        ("lengths",)),
    Bad("lengths-above-T", _set("lengths", lambda n: np.where(n == T, T + 1, n)), ValueError,
        ("lengths",)),
    Bad("lengths-short", _set("lengths", _shrink), ValueError, ("lengths",)),
    Bad("lengths-2d", _set("lengths", lambda n: n[None]), ValueError, ("lengths",)),
    Bad("lengths-float", _set("lengths", lambda n: n.astype(np.float64)),
        (TypeError, ValueError), ("lengths",)),
    Bad("lengths-int32", _set("lengths", lambda n: n.astype(np.int32)),
        (TypeError, ValueError), ("lengths",)),
    Bad("lengths-list", _set("lengths", lambda n: n.tolist()), (TypeError, ValueError),
        ("lengths",)),
    Bad("lengths-0", _set("lengths", lambda n: np.where(n == 1, 0, n)), ValueError,
        ("lengths",), phase="backward"),
    # options
    Bad("nonlinearity", lambda case, cache: {"nonlinearity": "sigmoid"}, ValueError,
        ("nonlinearity",), ("rnn-tanh",)),
    Bad("nonlinearity", lambda case, cache: {"nonlinearity": "sigmoid"}, ValueError,
        ("nonlinearity",), ("rnn-tanh",), phase="backward"),
    # backward: output gradients
    Bad("dy-width", _set("dy", _shrink), ValueError, ("dy",), phase="backward"),
    Bad("dy-steps", _set("dy", lambda d: _shrink(d, 0)), ValueError, ("dy",), phase="backward"),
    Bad("dy-2d", _set("dy", lambda d: d[0]), ValueError, ("dy",), phase="backward"),
    Bad("dy-float32", _set("dy", lambda d: d.astype(np.float32)), TypeError, ("dy",),
        phase="backward"),
    Bad("dy-list", _set("dy", lambda d: d.tolist()), TypeError, ("dy",), phase="backward"),
    Bad("dh_n-width", _set("dh_n", _grow), ValueError, ("dh_n",), phase="backward"),
    Bad("dh_n-batch", _set("dh_n", lambda d: _shrink(d, 0)), ValueError, ("dh_n",),
        phase="backward"),
    Bad("dc_n-width", _set("dc_n", _shrink), ValueError, ("dc_n",), LSTM, phase="backward"),
    # backward: the cache
    Bad("cache-gates", _set_cache("gates", _shrink), ValueError, ("gates",), (*LSTM, "gru"),
        phase="backward"),
    Bad("cache-c", _set_cache("c", lambda c: _shrink(c, 0)), ValueError, ("c",), LSTM,
        phase="backward"),
    Bad("cache-h", _set_cache("h", _grow), ValueError, ("h",), phase="backward"),
    Bad("cache-hn", _set_cache("hn", lambda h: h[0]), ValueError, ("hn",), ("gru",),
        phase="backward"),
    Bad("cache-h-float32", _set_cache("h", lambda h: h.astype(np.float32)), TypeError, ("h",),
        phase="backward"),
    Bad("cache-missing-h", lambda case, cache: {"cache": {k: v for k, v in cache.items()
                                                         if k != "h"}},
        (KeyError, ValueError), ("h",), phase="backward"),
    Bad("cache-None", lambda case, cache: {"cache": None}, TypeError, ("cache",),
        phase="backward"),
    # _core never copies: non-contiguous arrays are refused
    *[Bad(f"{name}-strided", _set(name, _strided), ValueError, (name,), variants,
          modules=("_core",), says="contiguous")
      for name, variants in [("x", ALL), ("h0", ALL), ("w_ih", ALL), ("w_hh", ALL),
                             ("b_ih", ALL), ("c0", LSTM), ("w_hr", LSTM), ("w_peep", LSTM)]],
    Bad("dy-strided", _set("dy", _strided), ValueError, ("dy",), phase="backward",
        modules=("_core",), says="contiguous"),
    Bad("lengths-strided", _set("lengths", _strided), ValueError, ("lengths",),
        modules=("_core",), says="contiguous"),
    Bad("cache-gates-strided", _set_cache("gates", _strided), ValueError, ("gates",),
        (*LSTM, "gru"), phase="backward", modules=("_core",), says="contiguous"),
]

CALLS = [pytest.param(module, bad, variant_id, id=f"{module}-{bad.id}-{bad.phase}-{variant_id}")
         for bad in BAD for variant_id in bad.variants for module in bad.modules]


def _names(names):
    """A pattern matching any of ``names`` as a whole word."""
    return r"\b(" + "|".join(re.escape(n) for n in names) + r")\b"


def _good_case(make_case, variant_id):
    return make_case(variant_id, T, B, I, H, P=P, ragged=True)


@pytest.mark.parametrize(("module_name", "bad", "variant_id"), CALLS)
def test_bad_input_is_refused(module_name, bad, variant_id, make_case):
    module = importlib.import_module(f"rnnfast.{module_name}")
    case = _good_case(make_case, variant_id)
    cache = case.forward(module)[1] if bad.phase == "backward" else None
    overrides = bad.change(case, cache)
    if bad.phase == "forward":
        call = functools.partial(case.forward, module, **overrides)
    else:
        call = functools.partial(case.backward, module, overrides.pop("cache", cache), **overrides)
    with pytest.raises(bad.error, match=_names(bad.names)) as raised:
        call()
    assert bad.says in str(raised.value)


@pytest.mark.parametrize("module_name", BOTH)
@pytest.mark.parametrize("variant_id", ["lstm-all", "gru", "gru-lbr0", "rnn-tanh"])
def test_good_input_is_accepted(module_name, variant_id, make_case):
    """The cases the bad inputs are made from are themselves good."""
    module = importlib.import_module(f"rnnfast.{module_name}")
    case = _good_case(make_case, variant_id)
    _, cache = case.forward(module)
    case.backward(module, cache)
    assert case.forward(module, training=False)[1] is None


@pytest.mark.parametrize("module_name", BOTH)
def test_message_gives_argument_expected_and_actual_shape(module_name, make_case):
    """SPEC.md's format, to the letter: "w_hh: expected shape (20, 5), got (20, 4)"."""
    module = importlib.import_module(f"rnnfast.{module_name}")
    case = make_case("lstm", T, B, I, H)
    w_hh = _shrink(case.inputs["w_hh"])
    with pytest.raises(ValueError, match=re.escape("w_hh: expected shape (20, 5), got (20, 4)")):
        case.forward(module, w_hh=w_hh)
