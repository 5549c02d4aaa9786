"""rnnfast: fused LSTM, GRU and RNN kernels for CPUs, with a NumPy reference."""

from rnnfast._core import build_info, get_num_threads, set_num_threads

__version__ = build_info()["version"]
