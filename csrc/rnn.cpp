// Vanilla RNN forward / backward kernels. Equations and layouts: rnn.h and common.h.
// The same scan as the LSTM with one gate; when training the input projection is written straight into the
// saved states, each step then activating its slot in place.
#include "rnn.h"

#include "activations.h"
#include "seq.h"

namespace rnnfast {
namespace {

template <typename T>
inline void activate(ArrMap<T> v, Nonlinearity act) {
  if (act == Nonlinearity::Tanh) tanh_inplace(v.data(), v.size());
  else v = v.max(T(0));
}

// d *= act'(h), from the activation's output h.
template <typename T>
inline void times_derivative(ArrMap<T> d, ConstArrMap<T> h, Nonlinearity act) {
  if (act == Nonlinearity::Tanh) d *= T(1) - h * h;
  else d = (h > T(0)).select(d, T(0));
}

}  // namespace

template <typename T>
void rnn_forward(T* y, T* h_n, const RnnCache<T>& cache, const T* x, const T* h0,
                 const RnnWeights<T>& w, const RnnShape& s) {
  const Index B = s.B, I = s.I, H = s.H;
  const bool training = cache.h != nullptr;
  const Seq seq = Seq::of(s.T, B, s.reverse, s.lengths);
  const Index ntiles = tile_count(H);
  if (const Index Ta = active_steps(seq); Ta < s.T) {  // see active_steps
    rnn_forward(y, h_n, cache, x, h0, w, first_steps(s, Ta));
    zero_steps(y, Ta, seq, H);
    if (training) carry_steps(cache.h, h0, Ta, seq, H);
    return;
  }

  const PackedB<T> w_ih_t = pack_weight<T>(w.w_ih, H, I, seq);
  const PackedB<T> w_hh_t = pack_gate_tiles(w.w_hh, 0, 1, H, H, seq);
  const int nth = region_threads(double(B) * H * (H + I));
  const ProjectionPlan plan = projection_plan(seq, H, I, nth, training);
  Buffer<T> xp_ws(projection_workspace(plan, seq, H, training));
  Buffer<T> rec(ntiles * B * kMaxTileUnits);
  T* const h_saved = hidden_states(cache.h, y, seq);
  Buffer<T> ring_h(h_saved != nullptr ? 0 : 2 * B * H);
  const Buffer<T> bias = fold_biases(w.b_ih, w.b_hh, H);
  const T* bias_p = bias_or_null(bias);
  const StateSlots<T> hs{h_saved, ring_h.data(), h0, H};

  const ActiveRows<T> h_rows(seq, H, nth);
  const StepRows active(seq, 0, seq.T);
  ChunkProjection<T> projection(seq, active, I, H);
  StepBarrier step_end;
  TileClaims claims(ntiles);
  forward_scan<T>(nth, plan, seq, cache.h, xp_ws.data(), x, w_ih_t, I, projection,
                  [&](Index k, Index t, T* a_t, const T* x_t) {
    const T* h_prev = hs.prev(seq, k, t);
    T* h_new = hs.next(seq, k, t);  // == a_t when training
    T* y_t = y + t * B * H;
    Index nact, lda;
    const T* h_act = h_rows.gather(h_prev, H, t, nact, lda);
    step_tiles(claims, k, a_t, x_t, I, w_ih_t, 1, H, B, ntiles, [&](Index tile) {
      const Tile tl = tile_at(tile, H);
      const Index n = tl.size();
      T* rc = tile_scratch(rec, tile, B, 1);
      tile_recurrent_gemm<T>(rc, n, h_act, lda, w_hh_t, 1, nact, tl);
      for (Index b = 0, i = 0; b < B; ++b) {
        const bool act = seq.active(t, b);
        ArrMap<T> hv(h_new + b * H + tl.lo, n);
        if (act) {
          hv = ConstArrMap<T>(a_t + b * H + tl.lo, n) + ConstArrMap<T>(rc + (i++) * n, n);
          if (bias_p != nullptr) hv += ConstArrMap<T>(bias_p + tl.lo, n);
          activate<T>(hv, s.act);
        } else {
          copy_units(h_new + b * H, h_prev + b * H, tl);
        }
        emit_output(y_t + b * H, h_new + b * H, tl, act);
      }
    });
    step_end.wait();
  });

  std::copy(hs.last(seq), hs.last(seq) + B * H, h_n);
}

template <typename T>
void rnn_backward(const RnnGrads<T>& g, const T* dy, const T* dh_n, const T* x, const T* h0,
                  const RnnWeights<T>& w, const RnnCache<T>& cache, const RnnShape& s) {
  const Index Tn = s.T, B = s.B, I = s.I, H = s.H, TB = Tn * B;
  const Seq seq = Seq::of(Tn, B, s.reverse, s.lengths);
  const Index ntiles = tile_count(H);
  if (const Index Ta = active_steps(seq); Ta < Tn) {
    rnn_backward(g, dy, dh_n, x, h0, w, cache, first_steps(s, Ta));
    zero_steps(g.dx, Ta, seq, I);
    return;
  }

  const PackedB<T> w_ih_p = PackedB<T>::from_rows(w.w_ih, H, I, I);
  const PackedB<T> w_hh_p = PackedB<T>::from_rows(w.w_hh, H, H, H);
  Buffer<T> dg(TB * H);
  GradRing<T> dh(B, H, dh_n);

  const int nth = region_threads(double(B) * H * (H + I));
  const int gth = gemm_threads(nth, double(TB) * H * (2 * I + H), std::min(I, H));
  const ActiveRows<T> dg_rows(seq, H, nth);
  Buffer<T> bp_scratch(ntiles * B * kMaxTileUnits);
  Buffer<T> tn_scratch(tn_scratch_size<T>(std::max(I, H), gth));
  const GradRows sum_rows(seq);
  ChunkProjection<T> dx_rows(seq, sum_rows.all, H, I);
  StepBarrier step_end;
  run_threads(nth, [&] {
    for (Index k = Tn - 1; k >= 0; --k) {
      const Index t = seq.time(k);
      const Index step = Tn - 1 - k;
      const T* dh_in = dh.in(step);
      T* dh_out = dh.out(step);
      T* dg_t = dg.data() + t * B * H;
      const T* dy_t = dy != nullptr ? dy + t * B * H : nullptr;
#pragma omp for schedule(static) nowait
      for (Index tile = 0; tile < ntiles; ++tile) {
        const Tile tl = tile_at(tile, H);
        const Index n = tl.size();
        for (Index b = 0; b < B; ++b) {
          ArrMap<T> d(dg_t + b * H + tl.lo, n);
          if (!seq.active(t, b)) {
            d.setZero();
            continue;
          }
          d = ConstArrMap<T>(dh_in + b * H + tl.lo, n);
          if (dy_t != nullptr) d += ConstArrMap<T>(dy_t + b * H + tl.lo, n);
          times_derivative<T>(d, ConstArrMap<T>(cache.h + (t * B + b) * H + tl.lo, n), s.act);
        }
      }
      step_end.wait();
      recurrent_backprop<T>(dh_out, dh_in, dg_t, H, w_hh_p, dg_rows, bp_scratch, seq, t, false,
                            step_end);
    }
  });

  // After the walk: the big GEMMs over the gradients.
  run_threads(gth, [&] {
    input_grads<T>(g.dx, g.dw_ih, g.db_ih, dg.data(), x, w_ih_p, seq, sum_rows, dx_rows,
                   tn_scratch);
    prev_state_weight_grad<T>(g.dw_hh, dg.data(), H, H, cache.h, h0, H, seq, sum_rows, tn_scratch);
  });

  std::copy(g.db_ih, g.db_ih + H, g.db_hh);
  dh.copy_result(Tn, g.dh0);
}

#define RNNFAST_INSTANTIATE(T)                                                                  \
  template void rnn_forward<T>(T*, T*, const RnnCache<T>&, const T*, const T*,                 \
                               const RnnWeights<T>&, const RnnShape&);                         \
  template void rnn_backward<T>(const RnnGrads<T>&, const T*, const T*, const T*, const T*,    \
                                const RnnWeights<T>&, const RnnCache<T>&, const RnnShape&);
RNNFAST_INSTANTIATE(float)
RNNFAST_INSTANTIATE(double)
#undef RNNFAST_INSTANTIATE

}  // namespace rnnfast
