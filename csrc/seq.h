// Building blocks shared by the LSTM, GRU and RNN kernels: the chunked input projection, the
// per-tile packing of the recurrent weights, the inactive-row bookkeeping and the gradient GEMMs
// formed after the backward time loop. All par_* / omp-for helpers must be called by every thread
// of the kernel's parallel region.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "workspace.h"
#include "parallel.h"

namespace rnnfast {

// Steps per chunk of the input projection: enough rows for an efficient GEMM, bounded memory.
// Depends only on (T, B), so training and inference project identically.
constexpr Index kChunkRows = 256;
inline Index chunk_steps(Index T, Index B) {
  Index c = (kChunkRows + B - 1) / B;
  return c < T ? c : T;
}

// Past the longest sequence every row is inactive: the outputs there are 0 and the states are
// carried unchanged. So a kernel computes only the first active_steps() time steps (a prefix of
// every time-major array) and fills the other steps with zero_steps / carry_steps: a batch of short
// sequences costs what its longest sequence costs, not what T does.
inline Index active_steps(const Seq& s) {
  if (s.lengths == nullptr) return s.T;
  Index longest = 0;
  for (Index b = 0; b < s.B; ++b) longest = std::max<Index>(longest, s.lengths[b]);
  return std::min(longest, s.T);
}

// The same call's shape, cut to its first T steps.
template <typename Shape>
Shape first_steps(Shape s, Index T) {
  s.T = T;
  return s;
}

// Time steps [from, T) of a time-major (T, B, W) array set to 0.
template <typename T>
void zero_steps(T* a, Index from, const Seq& s, Index W) {
  std::fill(a + from * s.B * W, a + s.T * s.B * W, T(0));
}

// Time steps [from, T) of the states saved after each step (T, B, W), as the whole walk leaves
// them: the state of step from - 1 carried on (forward), or the initial state s0 (reverse, where
// those steps come first).
template <typename T>
void carry_steps(T* a, const T* s0, Index from, const Seq& s, Index W) {
  const Index n = s.B * W;
  const T* src = s.reverse ? s0 : a + (from - 1) * n;
  for (Index t = from; t < s.T; ++t) std::copy(src, src + n, a + t * n);
}

// The biases b1 + b2 of n pre-activations as one vector (either may be null; empty when both
// are). The kernels' gate passes add it together with the recurrent GEMM's result, so that the
// input projection is a bare GEMM with no pass of its own over its (rows, GH) output.
template <typename T>
Buffer<T> fold_biases(const T* b1, const T* b2, Index n) {
  if (b1 == nullptr && b2 == nullptr) return Buffer<T>();
  Buffer<T> b(n);
  for (Index k = 0; k < n; ++k)
    b.data()[k] = (b1 != nullptr ? b1[k] : T(0)) + (b2 != nullptr ? b2[k] : T(0));
  return b;
}

// A folded bias's pointer, null when there is none.
template <typename T>
const T* bias_or_null(const Buffer<T>& b) {
  return b.empty() ? nullptr : b.data();
}

// Where each step's previous and new state live: the cache when training (states saved in time
// order), else two ring buffers of (B, W).
template <typename T>
struct StateSlots {
  T* saved;      // (T, B, W) or null
  T* ring;       // (2, B, W), used when saved is null
  const T* s0;   // (B, W) initial state
  Index W;

  const T* prev(const Seq& s, Index k, Index t) const {
    if (saved != nullptr) return s.prev_state<T>(saved, s0, t, W);
    return k == 0 ? s0 : ring + ((k - 1) % 2) * s.B * W;
  }
  T* next(const Seq& s, Index k, Index t) const {
    return saved != nullptr ? saved + t * s.B * W : ring + (k % 2) * s.B * W;
  }
  const T* last(const Seq& s) const {
    return saved != nullptr ? saved + s.last_time() * s.B * W : ring + ((s.T - 1) % 2) * s.B * W;
  }
};

// Where a forward keeps its hidden states h_t (T, B, W), in time order: the cache when training,
// else the output y itself when every row is active throughout (then h_t is y_t, written once),
// else null (StateSlots then uses ring buffers, since rows past their end output 0).
template <typename T>
T* hidden_states(T* cache_h, T* y, const Seq& s) {
  if (cache_h != nullptr) return cache_h;
  return s.lengths == nullptr ? y : nullptr;
}

// Row indices (t - t0) * B + b of the (t, b), t in [t0, t1), active at their step, in time order:
// the rows that the GEMMs over all steps multiply (ChunkProjection; par_gemm_tn's krows in the
// sums after the backward walk, where the gate gradients of the other rows are 0). Without
// lengths every row takes part and rows() is null.
class StepRows {
 public:
  StepRows(const Seq& s, Index t0, Index t1)
      : count_(std::max<Index>(t1 - t0, 0) * s.B), rows_(s.lengths != nullptr ? count_ : 0),
        starts_(s.lengths != nullptr ? std::max<Index>(t1 - t0, 0) + 1 : 0) {
    if (s.lengths == nullptr) return;
    count_ = 0;
    for (Index t = t0; t < t1; ++t) {
      starts_.data()[t - t0] = count_;
      for (Index b = 0; b < s.B; ++b)
        if (s.active(t, b)) rows_.data()[count_++] = (t - t0) * s.B + b;
    }
    starts_.data()[std::max<Index>(t1 - t0, 0)] = count_;
  }
  Index count() const { return count_; }
  const Index* rows() const { return rows_.empty() ? nullptr : rows_.data(); }
  // With lengths: where the rows of step t0 + k begin in rows() (k = t1 - t0: count()).
  Index start(Index k) const { return starts_.data()[k]; }

 private:
  Index count_;
  Buffer<Index> rows_, starts_;
};

// One chunk of steps of a GEMM over time-major rows, out (steps * B, n_out) = in (steps * B, n_in)
// * w, for batches with lengths: only the rows active at their step (`active`, the StepRows of
// all steps) are multiplied, gathered into a dense block and the products scattered back to their
// rows, so that a ragged batch pays for the steps it has, not for its padding. The forward's input
// projection (in = x, w = w_ih^T) and the backward's dx (in = the gate gradients, w = w_ih) run
// through it. The rows of inactive (t, b) are left unwritten: the forward's steps overwrite those
// slots without reading them, and input_grads sets dx to 0 there. Without lengths, or when every
// row of the chunk is active, the chunk is one plain GEMM.
template <typename T>
class ChunkProjection {
 public:
  ChunkProjection(const Seq& s, const StepRows& active, Index n_in, Index n_out)
      : B_(s.B), active_(active), n_in_(n_in), n_out_(n_out),
        rows_(s.lengths != nullptr ? chunk_steps(s.T, s.B) * s.B : 0), in_(rows_ * n_in),
        out_(rows_ * n_out) {}

  // out = in * w for the `steps` steps from time t_lo on (in and out point at time t_lo); called
  // by every thread of the region, ends with a barrier.
  void run(Index t_lo, Index steps, const T* in, const PackedB<T>& w, T* out) {
    const Index first = active_.rows() != nullptr ? active_.start(t_lo) : 0;
    const Index n = active_.rows() != nullptr ? active_.start(t_lo + steps) - first : steps * B_;
    if (n == steps * B_) {
      par_gemm<T>(steps * B_, in, n_in_, w, false, out, n_out_);
      return;
    }
    const Index* idx = active_.rows() + first;  // counted from time 0: less t_lo * B here
    const Index base = t_lo * B_;
#pragma omp for schedule(static)
    for (Index r = 0; r < n; ++r)
      std::memcpy(in_.data() + r * n_in_, in + (idx[r] - base) * n_in_, sizeof(T) * n_in_);
    par_gemm<T>(n, in_.data(), n_in_, w, false, out_.data(), n_out_);
#pragma omp for schedule(static)
    for (Index r = 0; r < n; ++r)
      std::memcpy(out + (idx[r] - base) * n_out_, out_.data() + r * n_out_, sizeof(T) * n_out_);
  }

 private:
  Index B_;
  const StepRows& active_;
  Index n_in_, n_out_, rows_;
  Buffer<T> in_, out_;
};

// Whether a call multiplies its weights straight from their rows (PackedB's direct mode, gemv_nt)
// instead of packing them first: for at most kDirectMaxSteps steps, when that reads each weight at
// most kDirectMaxPasses times, T * ceil(B / kDirectMaxRows) (a cell's step at B <= 4: once).
// Packing reads w, writes its panels and reads those back, once per step for the recurrent
// weights (from L2 when they fit): over more steps that pays, however small the batch. Against
// packing every call of more than 4 rows (LSTM, H = 256, 2 threads, medians of 16 paired
// processes, Zen 4): T = 1, B = 16-32 0.79x-0.94x the time; T = 2, B = 8-16 0.62x-0.86x; T = 4,
// B = 4-8 0.70x-0.89x; B = 1 with T = 6-8 would be 1.00x-1.20x, so those steps pack.
constexpr Index kDirectMaxSteps = 4;
constexpr Index kDirectMaxPasses = 8;
inline bool reads_weights_directly(const Seq& s) {
  return s.T <= kDirectMaxSteps &&
         s.T * ((s.B + kDirectMaxRows - 1) / kDirectMaxRows) <= kDirectMaxPasses;
}

// How forward_scan projects the inputs of a call whose steps run on `threads` threads (see there).
enum class ProjectionPlan { kInWalk, kFirst, kPipelined };
inline ProjectionPlan projection_plan(const Seq& s, Index GH, Index I, int threads, bool training) {
  if (reads_weights_directly(s) || gemm_threads(threads, double(s.T) * s.B * GH * I, I) == threads)
    return ProjectionPlan::kInWalk;
  if (training) return ProjectionPlan::kFirst;
  return s.T >= 2 * chunk_steps(s.T, s.B) ? ProjectionPlan::kPipelined : ProjectionPlan::kInWalk;
}

// The elements of forward_scan's workspace for the projected inputs of a chunk (inference only:
// training projects into its cache), two chunks when pipelined.
inline Index projection_workspace(ProjectionPlan plan, const Seq& s, Index GH, bool training) {
  if (training) return 0;
  return (plan == ProjectionPlan::kPipelined ? 2 : 1) * chunk_steps(s.T, s.B) * s.B * GH;
}

// The forward time loop shared by the cells, on `threads` threads (run_threads): for each chunk of
// steps, one GEMM projects the inputs (x w_ih^T, no bias: the step adds it; see ChunkProjection)
// into `saved_xp` (T, B, GH) when training or into the chunk workspace `xp_ws` (of
// projection_workspace elements, `plan` being projection_plan's) otherwise, then
// step(k, t, a_t, x_t) runs for each step with a_t (B, GH) the projected inputs of time t; the
// GEMM ends with a barrier. When w_ih is read in place (reads_weights_directly: a short call, such
// as a cell's step) there is no GEMM: x_t is then time t's inputs and each tile of the step
// projects its own units (step_tiles), so that a step has no barrier between the two and reads
// each row of w_ih once. Otherwise x_t is null.
//
// When the steps are small enough for one thread but the projection is large (gemm_threads,
// projection_plan), the other threads project: training projects all chunks first (its cache
// keeps them all), in a region of all threads; inference pipelines, a second thread projecting
// chunk c + 1 (into the other half of xp_ws) while the first walks chunk c, each in a team of its
// own. The same GEMM per chunk either way: the same results. Zen 4, 2 threads, in-process pairs
// against the projection in the walk: training LSTM B = 1, H = 64, T = 300-1000 0.95x-0.97x the
// time, GRU 0.96x, RNN H = 128-200 0.95x-0.96x; inference LSTM B = 1, H = 64, T = 512 0.91x-0.93x,
// T = 1000 0.85x-0.86x, H = 96 0.83x, GRU H = 64 0.82x, B = 3, H = 48 0.69x. A pipeline needs two
// full chunks: at T = 300 (chunks of 256 and 44 steps) it took 1.07x the time, the second
// chunk's projected inputs coming from the other core's cache costing about what projecting them
// saved.
template <typename T, typename Step>
void forward_scan(int threads, ProjectionPlan plan, const Seq& s, T* saved_xp, T* xp_ws,
                  const T* x, const PackedB<T>& w_ih_t, Index I, ChunkProjection<T>& projection,
                  Step&& step) {
  const Index GH = w_ih_t.N();
  const Index Tc = chunk_steps(s.T, s.B);
  const bool per_tile = w_ih_t.direct();
  // f(c, k0, k1, t_lo, xp) for each chunk c of steps [k0, k1), times from t_lo on, projected
  // into xp (the second half of xp_ws for odd chunks when pipelined).
  auto chunks = [&](auto&& f) {
    for (Index c = 0, k0 = 0; k0 < s.T; ++c, k0 += Tc) {
      const Index k1 = k0 + Tc < s.T ? k0 + Tc : s.T;
      const Index t_lo = s.reverse ? s.T - k1 : k0;
      T* xp = saved_xp != nullptr ? saved_xp + t_lo * s.B * GH
                                  : xp_ws + (plan == ProjectionPlan::kPipelined ? c % 2 : 0) *
                                                Tc * s.B * GH;
      f(c, k0, k1, t_lo, xp);
    }
  };
  auto project = [&](Index, Index k0, Index k1, Index t_lo, T* xp) {
    projection.run(t_lo, k1 - k0, x + t_lo * s.B * I, w_ih_t, xp);
  };
  auto walk = [&](Index, Index k0, Index k1, Index t_lo, T* xp) {
    for (Index k = k0; k < k1; ++k) {
      const Index t = s.time(k);
      step(k, t, xp + (t - t_lo) * s.B * GH, per_tile ? x + t * s.B * I : nullptr);
    }
  };
  switch (plan) {
    case ProjectionPlan::kInWalk:
      run_threads(threads, [&] {
        chunks([&](Index c, Index k0, Index k1, Index t_lo, T* xp) {
          if (!per_tile) project(c, k0, k1, t_lo, xp);
          walk(c, k0, k1, t_lo, xp);
        });
      });
      return;
    case ProjectionPlan::kFirst:
      run_threads(max_threads(), [&] { chunks(project); });
      run_threads(threads, [&] { chunks(walk); });
      return;
    case ProjectionPlan::kPipelined: {
      // Thread 0 walks, thread 1 projects chunks 1, 2, ... ahead of it, each in a nested team of
      // one (so that the GEMM's and the steps' worksharing and barriers are its own). Thread 0
      // projects chunk 0 itself: thread 1 has often gone to sleep since the last call, and its
      // waking then overlaps chunk 0 (waiting for it instead made T = 512, two chunks, 1.09x the
      // time). A team that got one thread does it all.
      Progress projected, walked;  // chunks projected by thread 1, chunks walked
      run_threads(2, [&] {
        const int team = omp_get_num_threads(), me = omp_get_thread_num();
#pragma omp parallel num_threads(1)
        chunks([&](Index c, Index k0, Index k1, Index t_lo, T* xp) {
          const bool own = team == 1 || c == 0;  // projected by the walking thread
          if (me == 1 && !own) {
            if (c >= 2) walked.wait_for(c - 1);  // chunk c - 2 has freed its half of xp_ws
            project(c, k0, k1, t_lo, xp);
            projected.advance();
          }
          if (me == 0) {
            if (own) project(c, k0, k1, t_lo, xp);
            else projected.wait_for(c);
            walk(c, k0, k1, t_lo, xp);
            walked.advance();
          }
        });
      });
      return;
    }
  }
}

// For forward_scan's steps without a chunk GEMM (x_t not null): the projected inputs of the units
// of one tile, a_t[b, g*H + u] = x_t[b] . w_ih[g*H + u] for every gate g < G and row b < B, w_ih_t
// being w_ih^T read in place (gemm_serial's dot products).
template <typename T>
inline void project_tile(T* a_t, const T* x_t, Index I, const PackedB<T>& w_ih_t, Index G, Index H,
                         Index B, Index tile) {
  const Tile tl = tile_at(tile, H);
  for (Index g = 0; g < G; ++g)
    gemm_serial<T>(B, tl.size(), x_t, I, w_ih_t, g * H + tl.lo, false, a_t + g * H + tl.lo, G * H);
}

// One forward step's tiles, tile_step(tile) for each of the `ntiles`, on the threads of the region
// (no barrier at the end). A step that projects its own inputs (x_t not null, see forward_scan)
// projects each tile's units right before tile_step, by the same thread, and its tiles are claimed
// (TileClaims, k the step) instead of split statically: such a step streams all its weights from
// cache once, and a thread whose core runs slower no longer holds up the other. Against a static
// split with all of a thread's projections before its recurrent products, B = 1, H = 256, Zen 4,
// alternating processes: LSTM step 0.97x the time on 2 threads in a quiet phase of the host (6
// pairs), 0.99x-1.01x in a slow one (5 pairs), 0.97x on 1 thread (3 pairs); GRU step 0.99x,
// 1.00x-1.02x and 0.97x. (The old order's gain, 0.97x the time on a Zen 3, did not show here.)
template <typename T, typename F>
inline void step_tiles(TileClaims& claims, Index k, T* a_t, const T* x_t, Index I,
                       const PackedB<T>& w_ih_t, Index G, Index H, Index B, Index ntiles,
                       F&& tile_step) {
  if (x_t != nullptr) {
    claims.run(k, [&](Index tile) {
      project_tile(a_t, x_t, I, w_ih_t, G, H, B, tile);
      tile_step(tile);
    });
    return;
  }
#pragma omp for schedule(static) nowait
  for (Index tile = 0; tile < ntiles; ++tile) tile_step(tile);
}

// The gradient w.r.t. the carried state during the backward walk: two (B, W) buffers that trade
// places every step. Starts from d_final (the gradient w.r.t. the final state; null = zeros).
template <typename T>
class GradRing {
 public:
  GradRing(Index B, Index W, const T* d_final) : bw_(B * W), buf_(2 * B * W, T(0)) {
    if (d_final != nullptr) std::copy(d_final, d_final + bw_, buf_.data());
  }
  // Into / out of the step walked `step`-th (0 = the last processed step).
  const T* in(Index step) const { return buf_.data() + (step % 2) * bw_; }
  T* out(Index step) { return buf_.data() + ((step + 1) % 2) * bw_; }
  // After all T steps: the gradient w.r.t. the initial state.
  void copy_result(Index T_, T* dst) const { std::copy(in(T_), in(T_) + bw_, dst); }

 private:
  Index bw_;
  Buffer<T> buf_;
};

// Per-thread dense copies of the rows active at a step, so that the per-step GEMMs skip the rows
// past their sequence's end: with ragged lengths a step costs what its active rows cost. Rows are
// kept in batch order (no sorting); without lengths nothing is copied.
template <typename T>
class ActiveRows {
 public:
  ActiveRows(const Seq& s, Index width, int threads)
      : s_(s), width_(width), buf_(s.lengths != nullptr ? threads * s.B * width : 0) {}

  // Rows of src (B, columns `width` of rows `ld` apart) active at time t: src itself when all are,
  // else this thread's dense (count, width) copy. Sets count.
  const T* gather(const T* src, Index ld, Index t, Index& count, Index& ld_out) const {
    if (s_.all_active(t)) {
      count = s_.B;
      ld_out = ld;
      return src;
    }
    T* dst = const_cast<T*>(buf_.data()) + omp_get_thread_num() * s_.B * width_;
    count = 0;
    for (Index b = 0; b < s_.B; ++b)
      if (s_.active(t, b)) std::memcpy(dst + (count++) * width_, src + b * ld, sizeof(T) * width_);
    ld_out = width_;
    return dst;
  }

 private:
  Seq s_;
  Index width_;
  Buffer<T> buf_;
};

// The recurrent weights for the per-step GEMMs: rows of gates [g0, g0 + G) of w (gates*H, K) as
// PackedB::from_gate_tiles lays them out, so that one GEMM per tile gives all gates of its units,
// or w itself (reads_weights_directly).
template <typename T>
PackedB<T> pack_gate_tiles(const T* w, Index g0, Index G, Index H, Index K, const Seq& s) {
  return PackedB<T>::from_gate_tiles(w, K, g0, G, H, K, reads_weights_directly(s));
}

// w^T (w (N, K)) for the input projection and the LSTM projection: direct as above.
template <typename T>
PackedB<T> pack_weight(const T* w, Index N, Index K, const Seq& s) {
  return PackedB<T>::from_weight(w, N, K, K, reads_weights_directly(s));
}

// Prefetches the units of a tile in each of the G gate blocks of one row (gate g at row + g * H):
// the gate passes walk the rows of a step's projected inputs one tile at a time, G H elements
// apart, a stride no hardware prefetcher follows, so each pass fetches the next row's lines while
// it computes this one. (The projected inputs come from L3: between their chunk's GEMM and their
// step the recurrent weights stream past. A standalone LSTM gate pass over such rows took 6.4-7.4
// ns a unit with this prefetch against 9-12 without, 4.8 on rows in L2; the LSTM forward took
// 0.95x-1.01x the time, the GRU forward 0.95x-0.99x, B = 16-128, in-process pairs, Zen 3.) The
// first row's units are prefetched before the tile's recurrent GEMM: a step of one row has no next
// row to prefetch meanwhile, and the thread that projected the row's units may sit on a distant
// core. (B = 1, T = 100, H = 128, Zen 4 under KVM, in-process pairs of two module builds: GRU
// forward 0.95x-0.97x, LSTM 0.98x-0.99x the time while the two vCPUs were a 340 ns cache-line
// round trip apart; 0.99x-1.01x at 80 ns.)
template <typename T>
inline void prefetch_gate_units(const T* row, Index G, Index H, Tile tl) {
  for (Index g = 0; g < G; ++g) prefetch_range(row + g * H + tl.lo, tl.size());
}

// out (M, G*n) with leading dimension ldo = h (M, K; rows ldh apart) * (the tile's G*n columns of
// packed).
template <typename T>
inline void tile_recurrent_gemm(T* out, Index ldo, const T* h, Index ldh, const PackedB<T>& packed,
                                Index G, Index M, Tile tl) {
  gemm_serial<T>(M, G * tl.size(), h, ldh, packed, G * tl.lo, false, out, ldo);
}

// dst[lo:hi] = src[lo:hi] for the units of a tile.
template <typename T>
inline void copy_units(T* dst, const T* src, Tile tl) {
  ArrMap<T>(dst + tl.lo, tl.size()) = ConstArrMap<T>(src + tl.lo, tl.size());
}

// y[lo:hi] = h[lo:hi] for an active row, 0 for an inactive one (the output past a sequence's end).
template <typename T>
inline void emit_output(T* y, const T* h, Tile tl, bool active) {
  if (y == h) return;  // the cache's states are the output itself
  if (active) copy_units(y, h, tl);
  else ArrMap<T>(y + tl.lo, tl.size()).setZero();
}

// Per-tile scratch: tile k owns B * G * kMaxTileUnits elements.
template <typename T>
inline T* tile_scratch(Buffer<T>& buf, Index k, Index B, Index G) {
  return buf.data() + k * B * G * kMaxTileUnits;
}

// Bias gradient: db (N,) = column sums of g (rows, ld) restricted to columns [0, N).
// Parallel over columns, rows summed in order: deterministic.
template <typename T>
void column_sums(T* db, const T* g, Index rows, Index N, Index ld) {
  const Index nt = (N + kGemmTileN - 1) / kGemmTileN;
#pragma omp for schedule(static)
  for (Index k = 0; k < nt; ++k) {
    const Index n0 = k * kGemmTileN, n1 = std::min(N, n0 + kGemmTileN);
    ArrMap<T> acc(db + n0, n1 - n0);
    acc.setZero();
    for (Index r = 0; r < rows; ++r) acc += ConstArrMap<T>(g + r * ld + n0, n1 - n0);
  }
}

// The rows of the sums after the backward walk: every step's (`all`), and those of the two GEMMs
// of prev_state_weight_grad (the first processed step; the others).
struct GradRows {
  explicit GradRows(const Seq& s)
      : all(s, 0, s.T), first(s, s.reverse ? s.T - 1 : 0, s.reverse ? s.T : 1),
        rest(s, s.reverse ? 0 : 1, s.reverse ? s.T - 1 : s.T) {}
  StepRows all, first, rest;
};

// dw (R, K) = sum_t dg[t]^T prev_state(t), with dg (T, B, ldg) restricted to R columns and the
// previous states read from the saved states (T, B, K) and s0 (B, K) as Seq says; over the rows
// of `rows` only.
template <typename T>
void prev_state_weight_grad(T* dw, const T* dg, Index ldg, Index R, const T* states, const T* s0,
                            Index K, const Seq& s, const GradRows& rows, Buffer<T>& scratch) {
  // Two GEMMs: the first processed step reads s0, the others read `states` shifted by one step,
  // which is one contiguous block.
  const Index B = s.B, T_ = s.T;
  const Index t_first = s.reverse ? T_ - 1 : 0;
  par_gemm_tn<T>(R, K, rows.first.count(), dg + t_first * B * ldg, ldg, s0, K, false, dw, K,
                 scratch, rows.first.rows());
  if (T_ > 1) {
    const T* g_rest = s.reverse ? dg : dg + B * ldg;
    const T* h_rest = s.reverse ? states + B * K : states;
    par_gemm_tn<T>(R, K, rows.rest.count(), g_rest, ldg, h_rest, K, true, dw, K, scratch,
                   rows.rest.rows());
  }
}

// Backward through the recurrent GEMM for time t: dh_out (B, P) (+)= dg_t (B, R) w (R, P), w
// packed as PackedB::from_rows, by tiles of P, over the rows active at t only (`dg_rows` gathers
// them; `out_scratch` holds B * kMaxTileUnits per tile). Without `accumulate`, rows inactive at
// t carry dh_in unchanged; with it, the caller has already put the direct term (or dh_in) into
// dh_out. Ends with a barrier.
template <typename T>
void recurrent_backprop(T* dh_out, const T* dh_in, const T* dg_t, Index ldg, const PackedB<T>& w,
                        const ActiveRows<T>& dg_rows, Buffer<T>& out_scratch, const Seq& s,
                        Index t, bool accumulate, StepBarrier& done) {
  const Index P = w.N();
  Index nact, lda;
  const T* a = dg_rows.gather(dg_t, ldg, t, nact, lda);
  const bool dense = nact == s.B;
#pragma omp for schedule(static) nowait
  for (Index tile = 0; tile < tile_count(P); ++tile) {
    const Tile tl = tile_at(tile, P);
    const Index n = tl.size();
    if (dense) {
      gemm_serial<T>(s.B, n, a, lda, w, tl.lo, accumulate, dh_out + tl.lo, P);
      continue;
    }
    T* out = tile_scratch(out_scratch, tile, s.B, 1);
    gemm_serial<T>(nact, n, a, lda, w, tl.lo, false, out, n);
    for (Index b = 0, i = 0; b < s.B; ++b) {
      ArrMap<T> d(dh_out + b * P + tl.lo, n);
      if (s.active(t, b)) {
        if (accumulate) d += ConstArrMap<T>(out + (i++) * n, n);
        else d = ConstArrMap<T>(out + (i++) * n, n);
      } else if (!accumulate) {
        d = ConstArrMap<T>(dh_in + b * P + tl.lo, n);
      }
    }
  }
  done.wait();
}

// After the time loop: dx (TB, I) = dg w_ih, dw_ih (GH, I) = dg^T x, db_ih = column sums of dg.
// With lengths, dx is multiplied by chunks of active rows (`dx_rows`, as the forward's input
// projection) and set to 0 at the others, and dw_ih sums the active rows only.
template <typename T>
void input_grads(T* dx, T* dw_ih, T* db_ih, const T* dg, const T* x, const PackedB<T>& w_ih,
                 const Seq& s, const GradRows& rows, ChunkProjection<T>& dx_rows,
                 Buffer<T>& scratch) {
  const Index GH = w_ih.K(), I = w_ih.N(), B = s.B, TB = s.T * B;
  if (s.lengths == nullptr) {
    par_gemm<T>(TB, dg, GH, w_ih, false, dx, I);
  } else {
    const Index Tc = chunk_steps(s.T, B);
    for (Index t0 = 0; t0 < s.T; t0 += Tc) {
      const Index steps = std::min(Tc, s.T - t0);
      dx_rows.run(t0, steps, dg + t0 * B * GH, w_ih, dx + t0 * B * I);
    }
#pragma omp for schedule(static)
    for (Index r = 0; r < TB; ++r)
      if (!s.active(r / B, r % B)) std::fill_n(dx + r * I, I, T(0));
  }
  par_gemm_tn<T>(GH, I, rows.all.count(), dg, GH, x, I, false, dw_ih, I, scratch, rows.all.rows());
  column_sums<T>(db_ih, dg, TB, GH, GH);
}

}  // namespace rnnfast
