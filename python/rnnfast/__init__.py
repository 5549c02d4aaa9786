"""rnnfast: fused LSTM, GRU and vanilla-RNN kernels for CPUs (C++, Eigen, OpenMP), a NumPy
reference that defines what correct means, and layers with PyTorch's weight layout.

Quick start::

    import numpy as np, rnnfast
    lstm = rnnfast.LSTM(input_size=8, hidden_size=16, num_layers=2, bidirectional=True, seed=0)
    y, (h, c) = lstm(np.random.rand(10, 4, 8).astype(np.float32))   # (T, B, I) -> (T, B, 2*16)
"""

from . import data, losses, metrics, nn, optim, reference
from ._core import build_info, get_num_threads, set_num_threads
from .cells import gru_cell, lstm_cell, rnn_cell
from .layers import GRU, LSTM, RNN
from .seq2seq import Seq2Seq

__version__: str = build_info()["version"]

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Seq2Seq",
    "__version__",
    "build_info",
    "data",
    "get_num_threads",
    "gru_cell",
    "losses",
    "lstm_cell",
    "metrics",
    "nn",
    "optim",
    "reference",
    "rnn_cell",
    "set_num_threads",
]
