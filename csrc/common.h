// rnnfast kernel conventions, stated once.
//
// Sizes: T steps, B batch, I input features, H hidden units, P = the width of the hidden state h
// (P = H except for an LSTM with a projection), G gates per unit (LSTM 4: i,f,g,o; GRU 3: r,z,n;
// RNN 1). All arrays are dense row-major (C order) with no padding: x (T,B,I), y (T,B,P),
// states (B,P) / (B,H). Weights use PyTorch's layout: w_ih (G*H, I), w_hh (G*H, P), b_ih and
// b_hh (G*H), gate g of unit j at row g*H + j; w_hr (P, H); w_peep (3, H) rows p_i, p_f, p_o.
//
// Pointers that may be null: biases (zero bias), w_hr / w_peep (variant off), lengths (all T),
// cache pointers in forward (inference: nothing is saved), dy / dh_n / dc_n in backward (zeros).
//
// Time: Seq (below) is the one place that decides processing order, which rows are active at a step
// and where the previous state of a step lives. Row b is active at time t iff t < lengths[b];
// an inactive row outputs 0, carries its state unchanged and has zero gates in the cache.
//
// Threads: the kernels own the threads, through one OpenMP parallel region per call (see
// parallel.h); Eigen is built with EIGEN_DONT_PARALLELIZE and never spawns threads of its own.
// Work is split in tiles whose sizes depend on the problem only, never on the thread count, so
// results are bitwise identical for any number of threads.
//
// No function here throws inside a parallel region: all validation and allocation happen before.
#pragma once

#include <Eigen/Core>
#include <cstddef>
#include <cstdint>

namespace rnnfast {

using Index = std::ptrdiff_t;

// Gate order within the G*H rows of the weights (PyTorch's).
namespace lstm_gate { constexpr Index i = 0, f = 1, g = 2, o = 3, count = 4; }
namespace gru_gate { constexpr Index r = 0, z = 1, n = 2, count = 3; }

// Hidden units per tile of the per-step work, roughly (see tile_at): a tile of u units owns G * u
// rows of the recurrent weights. Tiles start at multiples of kTileQuantum and are at most
// kMaxTileUnits wide.
constexpr Index kTileUnits = 32;
constexpr Index kTileQuantum = 16;
constexpr Index kMaxTileUnits = kTileUnits + kTileQuantum;

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MatMap = Eigen::Map<RowMat<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using ConstMatMap = Eigen::Map<const RowMat<T>, 0, Eigen::OuterStride<>>;
template <typename T>
using ArrMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ConstArrMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;

// Time bookkeeping of one layer direction over a (possibly ragged) batch.
struct Seq {
  Index T, B;
  bool reverse;
  const int64_t* lengths;  // (B,) or null

  // The Seq of a kernel call. Lengths that are all T say nothing and are dropped: such a batch
  // runs exactly the code of the batch without lengths.
  static Seq of(Index T, Index B, bool reverse, const int64_t* lengths) {
    bool full = lengths != nullptr;
    for (Index b = 0; full && b < B; ++b) full = lengths[b] >= T;
    return {T, B, reverse, full ? nullptr : lengths};
  }

  // Time index of the k-th processed step.
  Index time(Index k) const { return reverse ? T - 1 - k : k; }
  bool active(Index t, Index b) const { return lengths == nullptr || t < lengths[b]; }
  // True when every row is active at time t (the common, fast case).
  bool all_active(Index t) const {
    if (lengths == nullptr) return true;
    for (Index b = 0; b < B; ++b)
      if (t >= lengths[b]) return false;
    return true;
  }
  // The state before time t: s0 for the first processed step, else the saved state of the step
  // processed just before (states is (T, B, width), saved after each time step, in time order).
  template <typename T_>
  const T_* prev_state(const T_* states, const T_* s0, Index t, Index width) const {
    if (reverse) return t == T - 1 ? s0 : states + (t + 1) * B * width;
    return t == 0 ? s0 : states + (t - 1) * B * width;
  }
  // Time index of the last processed step (where the final state lives).
  Index last_time() const { return reverse ? 0 : T - 1; }
};

// The weights every cell has: w_ih (G*H, I), w_hh (G*H, P), biases (G*H,) or null.
template <typename T>
struct Weights {
  const T* w_ih;
  const T* w_hh;
  const T* b_ih;
  const T* b_hh;
};

// The gradients every cell's backward writes, shaped like x, h0 and the Weights.
template <typename T>
struct Grads {
  T* dx;     // (T, B, I)
  T* dh0;    // (B, P)
  T* dw_ih;  // (G*H, I)
  T* dw_hh;  // (G*H, P)
  T* db_ih;  // (G*H,)
  T* db_hh;  // (G*H,)
};

// Units [lo, hi) of tile k of n units.
struct Tile {
  Index lo, hi;
  Index size() const { return hi - lo; }
};
// Tiles of n units: about n / kTileUnits of them, an even number (beyond one) so that two threads
// get halves that differ by at most kTileQuantum / 2 units, with boundaries at multiples of
// kTileQuantum (so that every tile of every cell starts on a packed panel and on a float packet).
// Fixed 32-unit tiles left 4 tiles against 3 at n = 200: one thread did 28% more of each step.
// The tiling depends on n only, and results do not depend on it: the GEMM's summation order
// depends on K only (gemm.h) and the gate passes are element-wise.
inline Index tile_count(Index n) {
  const Index nt = (n + kTileUnits - 1) / kTileUnits;
  return nt > 1 && nt % 2 == 1 ? nt + 1 : nt;
}
inline Index tile_lo(Index k, Index n) {
  const Index nt = tile_count(n);
  if (k >= nt) return n;
  const Index lo = (k * n + nt * kTileQuantum / 2) / (nt * kTileQuantum) * kTileQuantum;
  return lo < n ? lo : n;
}
inline Tile tile_at(Index k, Index n) { return {tile_lo(k, n), tile_lo(k + 1, n)}; }
// The tile holding unit u (0 <= u < n).
inline Index tile_index(Index u, Index n) {
  const Index nt = tile_count(n);
  Index k = u * nt / n;
  while (k > 0 && tile_lo(k, n) > u) --k;
  while (k + 1 < nt && tile_lo(k + 1, n) <= u) ++k;
  return k;
}

// Scalar nonlinearities, used where a loop is not worth an Eigen expression.
template <typename T>
inline T sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

}  // namespace rnnfast
