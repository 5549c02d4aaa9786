# Type stub of rnnfast._core: the compiled kernels (csrc/bind/*.cpp, re-exported by _core.py from
# the build chosen for this CPU). Written by hand; tests/test_typing.py checks it against the
# running module (mypy's stubtest) and, because pybind11 functions carry no inspectable signature,
# against the signature line pybind11 writes into each function's docstring (names, kinds,
# defaults) and against rnnfast.reference, whose functions take the same arguments.
#
# Arrays: T steps, B batch, I input size, H hidden size, P projection size (P = H without one).
# Every float array of one call has the dtype of x (float32 or float64) and so has every result;
# lengths is int64. Shapes below; the equations are in rnnfast.reference.
from typing import Literal, TypeVar, overload

import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", bound=np.floating)

# The compiled builds present, best first, e.g. ["_core_native"].
available: list[str]

def cpu_flags() -> set[str]: ...
def build_info() -> dict[str, str]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
# The threads of the calls made from the calling thread only (0: set_num_threads's); returns the
# previous setting.
def set_local_threads(n: int) -> int: ...
# The round trip of a cache line between the cores of the last measured region's first two threads,
# in ns (0: not measured yet): the kernels run small steps on one thread when it is long.
def core_round_trip_ns() -> int: ...
# The float multiply-add ceiling of this build's kernels in GFLOP/s: one region of `threads` threads
# (0: set_num_threads's), each running about `seconds` of multiply-adds in registers. The host's
# other work only lowers it: take the best of several calls.
def fma_peak_gflops(threads: int = 0, seconds: float = 0.01) -> float: ...

# ---- LSTM ----------------------------------------------------------------------------------------
# x [T, B, I], h0 [B, P], c0 [B, H], w_ih [4H, I], w_hh [4H, P], b_ih, b_hh [4H],
# w_hr [P, H], w_peep [3, H] -> y [T, B, P], h_n [B, P], c_n [B, H],
# cache {"gates": [T, B, 4H], "c": [T, B, H], "h": [T, B, P]} when training, else None.
@overload
def lstm_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    c0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    w_hr: npt.NDArray[_F] | None = None,
    w_peep: npt.NDArray[_F] | None = None,
    coupled: bool = False,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: Literal[False] = False,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], npt.NDArray[_F], None]: ...
@overload
def lstm_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    c0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    w_hr: npt.NDArray[_F] | None = None,
    w_peep: npt.NDArray[_F] | None = None,
    coupled: bool = False,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: Literal[True],
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], npt.NDArray[_F], dict[str, npt.NDArray[_F]]]: ...
@overload
def lstm_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    c0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    w_hr: npt.NDArray[_F] | None = None,
    w_peep: npt.NDArray[_F] | None = None,
    coupled: bool = False,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: bool = False,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], npt.NDArray[_F], dict[str, npt.NDArray[_F]] | None]: ...

# dy [T, B, P] or None, dh_n [B, P] or None, dc_n [B, H] or None -> {"dx", "dh0", "dc0", "dw_ih",
# "dw_hh", "db_ih", "db_hh"} and "dw_hr" / "dw_peep" when w_hr / w_peep are given.
def lstm_backward(
    dy: npt.NDArray[_F] | None,
    dh_n: npt.NDArray[_F] | None,
    dc_n: npt.NDArray[_F] | None,
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    c0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    cache: dict[str, npt.NDArray[_F]],
    *,
    w_hr: npt.NDArray[_F] | None = None,
    w_peep: npt.NDArray[_F] | None = None,
    coupled: bool = False,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
) -> dict[str, npt.NDArray[_F]]: ...

# ---- GRU -----------------------------------------------------------------------------------------
# x [T, B, I], h0 [B, H], w_ih [3H, I], w_hh [3H, H], b_ih, b_hh [3H] -> y [T, B, H], h_n [B, H],
# cache {"gates": [T, B, 3H], "h": [T, B, H], "hn": [T, B, H] (linear_before_reset only)}.
@overload
def gru_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    linear_before_reset: bool = True,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: Literal[False] = False,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], None]: ...
@overload
def gru_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    linear_before_reset: bool = True,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: Literal[True],
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], dict[str, npt.NDArray[_F]]]: ...
@overload
def gru_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    linear_before_reset: bool = True,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: bool = False,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], dict[str, npt.NDArray[_F]] | None]: ...

# -> {"dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"}
def gru_backward(
    dy: npt.NDArray[_F] | None,
    dh_n: npt.NDArray[_F] | None,
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    cache: dict[str, npt.NDArray[_F]],
    *,
    linear_before_reset: bool = True,
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
) -> dict[str, npt.NDArray[_F]]: ...

# ---- Elman RNN -----------------------------------------------------------------------------------
# x [T, B, I], h0 [B, H], w_ih [H, I], w_hh [H, H], b_ih, b_hh [H] -> y [T, B, H], h_n [B, H],
# cache {"h": [T, B, H]}. Another nonlinearity is a ValueError at run time.
@overload
def rnn_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: Literal[False] = False,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], None]: ...
@overload
def rnn_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: Literal[True],
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], dict[str, npt.NDArray[_F]]]: ...
@overload
def rnn_forward(
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    b_ih: npt.NDArray[_F] | None = None,
    b_hh: npt.NDArray[_F] | None = None,
    *,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
    training: bool = False,
) -> tuple[npt.NDArray[_F], npt.NDArray[_F], dict[str, npt.NDArray[_F]] | None]: ...

# -> {"dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"}
def rnn_backward(
    dy: npt.NDArray[_F] | None,
    dh_n: npt.NDArray[_F] | None,
    x: npt.NDArray[_F],
    h0: npt.NDArray[_F],
    w_ih: npt.NDArray[_F],
    w_hh: npt.NDArray[_F],
    cache: dict[str, npt.NDArray[_F]],
    *,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    reverse: bool = False,
    lengths: npt.NDArray[np.int64] | None = None,
) -> dict[str, npt.NDArray[_F]]: ...
