// GRU forward / backward kernels. Equations and layouts: gru.h and common.h.
//
// Forward: chunked input projection, then per step and tile of hidden units one GEMM against the
// packed rows of w_hh and the fused gate pass. Without linear_before_reset the candidate needs the
// complete r * h_{t-1} first, so a step has two phases: (r, z, r * h) by tiles, then n and h.
// Backward: per step the fused pass forms the pre-activation gradients (and the direct term z * dh
// of dh_prev) by tiles, then dh_prev += dG w_hh by tiles of H; after the loop the large GEMMs.
#include "gru.h"

#include "activations.h"
#include "seq.h"

namespace rnnfast {
namespace {

using namespace gru_gate;

// The recurrent pre-activations hr, hz (tile layout in `rec`) and the biases (`bias`: b_ih + b_hh
// of r and z, or null) added to the input part xr, xz in `a` (PyTorch layout), then r and z
// activated in place.
template <typename T>
inline void gru_row_rz(T* a, const T* rec, const T* bias, Index H, Tile tl) {
  const Index n = tl.size(), lo = tl.lo;
  ArrMap<T> ar(a + r * H + lo, n), az(a + z * H + lo, n);
  if (bias != nullptr) {
    ar += ConstArrMap<T>(rec + r * n, n) + ConstArrMap<T>(bias + r * H + lo, n);
    az += ConstArrMap<T>(rec + z * n, n) + ConstArrMap<T>(bias + z * H + lo, n);
  } else {
    ar += ConstArrMap<T>(rec + r * n, n);
    az += ConstArrMap<T>(rec + z * n, n);
  }
  sigmoid_inplace(ar.data(), n);
  sigmoid_inplace(az.data(), n);
}

// n = tanh(xn + b_in + r * hn) (b_in may be null; hn = the recurrent candidate term, bias included,
// already multiplied out or not as the variant says: `reset_hn` applies r), then
// h_t = (1 - z) n + z h_{t-1}.
template <typename T>
inline void gru_row_update(T* a, const T* b_in, const T* hn, bool reset_hn, const T* h_prev,
                           T* h_new, Index H, Tile tl) {
  const Index n = tl.size(), lo = tl.lo;
  ArrMap<T> an(a + gru_gate::n * H + lo, n);
  ConstArrMap<T> rr(a + r * H + lo, n), zz(a + z * H + lo, n), hnv(hn, n);
  if (b_in != nullptr) an += ConstArrMap<T>(b_in + lo, n);
  if (reset_hn) an += rr * hnv;
  else an += hnv;
  tanh_inplace(an.data(), n);
  ArrMap<T>(h_new + lo, n) = (T(1) - zz) * an + zz * ConstArrMap<T>(h_prev + lo, n);
}

// The whole gate pass of an active row with linear_before_reset: r, z, then hn = (the recurrent n
// term) + b_hn into `hn` (units [lo, hi) at hn), n and h_t. b_in and b_hn may be null.
template <typename T>
inline void gru_row_lbr(T* a, const T* rc_row, const T* bias_rz, const T* b_in, const T* b_hn,
                        T* hn, const T* h_prev, T* h_new, Index H, Tile tl, bool /*keep_gates*/) {
  const Index nu = tl.size();
  gru_row_rz<T>(a, rc_row, bias_rz, H, tl);
  ArrMap<T> hv(hn, nu);
  hv = ConstArrMap<T>(rc_row + n * nu, nu);
  if (b_hn != nullptr) hv += ConstArrMap<T>(b_hn + tl.lo, nu);
  gru_row_update<T>(a, b_in, hn, true, h_prev, h_new, H, tl);
}

// The same in float, fused: per packet of units every operand is loaded once and every result
// stored once, the arithmetic the generic pass's operation for operation. Unless keep_gates
// (training), the gates and hn are not stored: inference needs neither.
inline void gru_row_lbr(float* a, const float* rc_row, const float* bias_rz, const float* b_in,
                        const float* b_hn, float* hn, const float* h_prev, float* h_new, Index H,
                        Tile tl, bool keep_gates) {
  using namespace Eigen::internal;
  using Pk = FloatPacket;
  const Index nu = tl.size(), lo = tl.lo;
  auto at = [lo](const float* p) { return p != nullptr ? p + lo : nullptr; };
  enum { A, RC, BRZ, BIN, BHN, HN, HP, HNEW };
  const Lanes gates = keep_gates ? out_lanes(a + lo, H, count) : in_lanes(a + lo, H, count);
  const Lanes hn_out = out_lanes(keep_gates ? hn : nullptr);
  const std::array<Lanes, 8> ops{gates,                       in_lanes(rc_row, nu, count),
                                 in_lanes(at(bias_rz), H, 2), in_lanes(at(b_in)),
                                 in_lanes(at(b_hn)),          hn_out,
                                 in_lanes(h_prev + lo),       out_lanes(h_new + lo)};
  fused_pass(nu, ops, [](const std::array<Lanes, 8>& v, Index u) {
    Pk xr = lanes_load(v[RC], r, u), xz = lanes_load(v[RC], z, u);
    if (v[BRZ].p != nullptr) {
      xr = padd(xr, lanes_load(v[BRZ], r, u));
      xz = padd(xz, lanes_load(v[BRZ], z, u));
    }
    const Pk rr = sigmoid_packet(padd(lanes_load(v[A], r, u), xr));
    const Pk zz = sigmoid_packet(padd(lanes_load(v[A], z, u), xz));
    Pk hv = lanes_load(v[RC], n, u);
    if (v[BHN].p != nullptr) hv = padd(hv, lanes_load(v[BHN], 0, u));
    Pk an = lanes_load(v[A], n, u);
    if (v[BIN].p != nullptr) an = padd(an, lanes_load(v[BIN], 0, u));
    an = tanh_packet(padd(an, pmul(rr, hv)));
    const Pk h = padd(pmul(psub(pset1<Pk>(1.0f), zz), an), pmul(zz, lanes_load(v[HP], 0, u)));
    if (v[A].out) {
      lanes_store(v[A], r, u, rr);
      lanes_store(v[A], z, u, zz);
      lanes_store(v[A], n, u, an);
    }
    if (v[HN].p != nullptr) lanes_store(v[HN], 0, u, hv);
    lanes_store(v[HNEW], 0, u, h);
  });
}

template <typename T>
inline void zero_gates(T* row, Index H, Tile tl) {
  for (Index gate = 0; gate < count; ++gate) ArrMap<T>(row + gate * H + tl.lo, tl.size()).setZero();
}

}  // namespace

template <typename T>
void gru_forward(T* y, T* h_n, const GruCache<T>& cache, const T* x, const T* h0,
                 const GruWeights<T>& w, const GruShape& s) {
  const Index B = s.B, I = s.I, H = s.H, GH = count * H;
  const bool training = cache.gates != nullptr;
  const bool lbr = s.linear_before_reset;
  const Seq seq = Seq::of(s.T, B, s.reverse, s.lengths);
  const Index ntiles = tile_count(H);
  if (const Index Ta = active_steps(seq); Ta < s.T) {  // see active_steps
    gru_forward(y, h_n, cache, x, h0, w, first_steps(s, Ta));
    zero_steps(y, Ta, seq, H);
    if (training) {
      zero_steps(cache.gates, Ta, seq, GH);
      if (lbr) zero_steps(cache.hn, Ta, seq, H);
      carry_steps(cache.h, h0, Ta, seq, H);
    }
    return;
  }

  const PackedB<T> w_ih_t = pack_weight<T>(w.w_ih, GH, I, seq);
  // With linear_before_reset one GEMM per tile gives r, z and hn; without, (r, z) first, then n.
  const PackedB<T> w_rzn = pack_gate_tiles(w.w_hh, 0, lbr ? count : 2, H, H, seq);
  const PackedB<T> w_n = lbr ? PackedB<T>() : pack_gate_tiles(w.w_hh, n, 1, H, H, seq);
  const int nth = region_threads(double(B) * GH * (H + I));
  const ProjectionPlan plan = projection_plan(seq, GH, I, nth, training);
  Buffer<T> xp_ws(projection_workspace(plan, seq, GH, training));
  Buffer<T> rec(ntiles * B * count * kMaxTileUnits);
  T* const h_saved = hidden_states(cache.h, y, seq);
  Buffer<T> ring_h(h_saved != nullptr ? 0 : 2 * B * H);
  Buffer<T> rh(lbr ? 0 : B * H), hn_ws(B * H);
  const StateSlots<T> hs{h_saved, ring_h.data(), h0, H};
  const T* b_hn = w.b_hh != nullptr ? w.b_hh + n * H : nullptr;
  const T* b_in = w.b_ih != nullptr ? w.b_ih + n * H : nullptr;
  const Buffer<T> bias_rz = fold_biases(w.b_ih, w.b_hh, 2 * H);

  const ActiveRows<T> rows(seq, H, nth);
  const StepRows active(seq, 0, seq.T);
  ChunkProjection<T> projection(seq, active, I, GH);
  StepBarrier step_end;
  TileClaims claims(ntiles);
  forward_scan<T>(nth, plan, seq, cache.gates, xp_ws.data(), x, w_ih_t, I, projection,
                  [&](Index k, Index t, T* a_t, const T* x_t) {
    const T* h_prev = hs.prev(seq, k, t);
    T* h_new = hs.next(seq, k, t);
    T* y_t = y + t * B * H;
    // hn_t: the candidate's recurrent term h_{t-1} w_hn^T + b_hn (saved when training) or,
    // without linear_before_reset, (r * h_{t-1}) w_hn^T + b_hn (a workspace).
    T* hn_t = (lbr && training) ? cache.hn + t * B * H : hn_ws.data();
    Index nact, lda;
    const T* h_act = rows.gather(h_prev, H, t, nact, lda);

    step_tiles(claims, k, a_t, x_t, I, w_ih_t, count, H, B, ntiles, [&](Index tile) {
      const Tile tl = tile_at(tile, H);
      const Index nu = tl.size();
      T* rc = tile_scratch(rec, tile, B, count);
      prefetch_gate_units(a_t, count, H, tl);  // row 0 (see prefetch_gate_units)
      tile_recurrent_gemm<T>(rc, count * nu, h_act, lda, w_rzn, lbr ? count : 2, nact, tl);
      for (Index b = 0, i = 0; b < B; ++b) {
        T* a_row = a_t + b * GH;
        if (b + 1 < B) prefetch_gate_units(a_row + GH, count, H, tl);
        const bool act = seq.active(t, b);
        if (!act) {
          zero_gates(a_row, H, tl);
          ArrMap<T>(hn_t + b * H + tl.lo, nu).setZero();
          if (!lbr) ArrMap<T>(rh.data() + b * H + tl.lo, nu).setZero();
          copy_units(h_new + b * H, h_prev + b * H, tl);
          emit_output(y_t + b * H, h_new + b * H, tl, false);
          continue;
        }
        const T* rc_row = rc + (i++) * count * nu;
        if (lbr) {
          gru_row_lbr(a_row, rc_row, bias_or_null(bias_rz), b_in, b_hn, hn_t + b * H + tl.lo,
                      h_prev + b * H, h_new + b * H, H, tl, training);
          emit_output(y_t + b * H, h_new + b * H, tl, true);
        } else {
          gru_row_rz<T>(a_row, rc_row, bias_or_null(bias_rz), H, tl);
          ArrMap<T>(rh.data() + b * H + tl.lo, nu) =
              ConstArrMap<T>(a_row + r * H + tl.lo, nu) * ConstArrMap<T>(h_prev + b * H + tl.lo, nu);
        }
      }
    });
    step_end.wait();
    if (lbr) return;

    // Second phase without linear_before_reset: hn = (r * h_{t-1}) w_hn^T + b_hn, then n and h.
    const T* rh_act = rows.gather(rh.data(), H, t, nact, lda);
#pragma omp for schedule(static) nowait
    for (Index tile = 0; tile < ntiles; ++tile) {
      const Tile tl = tile_at(tile, H);
      const Index nu = tl.size();
      T* rc = tile_scratch(rec, tile, B, count);
      tile_recurrent_gemm<T>(rc + n * nu, count * nu, rh_act, lda, w_n, 1, nact, tl);
      for (Index b = 0, i = 0; b < B; ++b) {
        if (!seq.active(t, b)) continue;
        T* hv = hn_t + b * H + tl.lo;
        ArrMap<T>(hv, nu) = ConstArrMap<T>(rc + (i++) * count * nu + n * nu, nu);
        if (b_hn != nullptr) ArrMap<T>(hv, nu) += ConstArrMap<T>(b_hn + tl.lo, nu);
        gru_row_update<T>(a_t + b * GH, b_in, hv, false, h_prev + b * H, h_new + b * H, H, tl);
        emit_output(y_t + b * H, h_new + b * H, tl, true);
      }
    }
    step_end.wait();
  });

  std::copy(hs.last(seq), hs.last(seq) + B * H, h_n);
}

template <typename T>
void gru_backward(const GruGrads<T>& g, const T* dy, const T* dh_n, const T* x, const T* h0,
                  const GruWeights<T>& w, const GruCache<T>& cache, const GruShape& s) {
  const Index Tn = s.T, B = s.B, I = s.I, H = s.H, GH = count * H, TB = Tn * B;
  const bool lbr = s.linear_before_reset;
  const Seq seq = Seq::of(Tn, B, s.reverse, s.lengths);
  const Index ntiles = tile_count(H);
  if (const Index Ta = active_steps(seq); Ta < Tn) {
    gru_backward(g, dy, dh_n, x, h0, w, cache, first_steps(s, Ta));
    zero_steps(g.dx, Ta, seq, I);
    return;
  }

  // dgx: gradients w.r.t. the input pre-activations (x w_ih^T + b_ih); dgh: w.r.t. the recurrent
  // ones (h w_hh^T + b_hh). They differ only in the n slot with linear_before_reset (dgh_n = r dgx_n);
  // without it they are the same array, and w_hn's input is r * h_{t-1} instead of h_{t-1}.
  const PackedB<T> w_ih_p = PackedB<T>::from_rows(w.w_ih, GH, I, I);
  // dh_prev = dgh w_hh over all gates (linear_before_reset) or over r, z only; w_hn separately.
  const PackedB<T> w_hh_p = PackedB<T>::from_rows(w.w_hh, lbr ? GH : 2 * H, H, H);
  const PackedB<T> w_hn_p = lbr ? PackedB<T>() : PackedB<T>::from_rows(w.w_hh + n * H * H, H, H, H);
  Buffer<T> dgx(TB * GH), dgh_store(lbr ? TB * GH : 0);
  T* dgh = lbr ? dgh_store.data() : dgx.data();
  GradRing<T> dh(B, H, dh_n);
  Buffer<T> drh(lbr ? 0 : B * H), rh_all(lbr ? 0 : TB * H);

  const int nth = region_threads(double(B) * GH * (H + I));
  const int gth = gemm_threads(nth, double(TB) * GH * (2 * I + H), std::min(I, H));
  const ActiveRows<T> dg_rows(seq, lbr ? GH : 2 * H, nth);
  Buffer<T> bp_scratch(ntiles * B * kMaxTileUnits);
  Buffer<T> tn_scratch(tn_scratch_size<T>(std::max(I, H), gth));
  const GradRows sum_rows(seq);
  ChunkProjection<T> dx_rows(seq, sum_rows.all, GH, I);
  StepBarrier step_end;
  run_threads(nth, [&] {
    for (Index k = Tn - 1; k >= 0; --k) {
      const Index t = seq.time(k);
      const Index step = Tn - 1 - k;
      const T* dh_in = dh.in(step);
      T* dh_out = dh.out(step);
      const T* gates_t = cache.gates + t * B * GH;
      const T* h_prev = seq.prev_state<T>(cache.h, h0, t, H);
      const T* dy_t = dy != nullptr ? dy + t * B * H : nullptr;
      T* dgx_t = dgx.data() + t * B * GH;
      T* dgh_t = dgh + t * B * GH;

#pragma omp for schedule(static) nowait
      for (Index tile = 0; tile < ntiles; ++tile) {
        const Tile tl = tile_at(tile, H);
        const Index nu = tl.size(), lo = tl.lo;
        for (Index b = 0; b < B; ++b) {
          T* dx_row = dgx_t + b * GH;
          T* dh_row = dh_out + b * H + lo;
          if (!seq.active(t, b)) {
            zero_gates(dx_row, H, tl);
            if (lbr) zero_gates(dgh_t + b * GH, H, tl);
            ArrMap<T>(dh_row, nu) = ConstArrMap<T>(dh_in + b * H + lo, nu);
            continue;
          }
          const T* gr = gates_t + b * GH;
          ConstArrMap<T> rr(gr + r * H + lo, nu), zz(gr + z * H + lo, nu), nn(gr + n * H + lo, nu);
          ConstArrMap<T> hp(h_prev + b * H + lo, nu);
          // dh: the gradient w.r.t. h_t (dy staged in dh_out, which is rewritten below).
          ArrMap<T> dht(dh_row, nu);
          dht = ConstArrMap<T>(dh_in + b * H + lo, nu);
          if (dy_t != nullptr) dht += ConstArrMap<T>(dy_t + b * H + lo, nu);
          ArrMap<T> dar(dx_row + r * H + lo, nu), daz(dx_row + z * H + lo, nu),
              dan(dx_row + n * H + lo, nu);
          dan = dht * (T(1) - zz) * (T(1) - nn * nn);
          daz = dht * (hp - nn) * zz * (T(1) - zz);
          if (lbr) {
            ConstArrMap<T> hn(cache.hn + (t * B + b) * H + lo, nu);
            dar = dan * hn * rr * (T(1) - rr);
            T* dgh_row = dgh_t + b * GH;
            ArrMap<T>(dgh_row + r * H + lo, nu) = dar;
            ArrMap<T>(dgh_row + z * H + lo, nu) = daz;
            ArrMap<T>(dgh_row + n * H + lo, nu) = dan * rr;
          }
          dht *= zz;  // the direct term of dh_{t-1}
        }
      }
      step_end.wait();

      if (!lbr) {
        // d(r * h_{t-1}) = dan w_hn, then the reset gate's gradient and its share of dh_{t-1}.
#pragma omp for schedule(static) nowait
        for (Index tile = 0; tile < ntiles; ++tile) {
          const Tile tl = tile_at(tile, H);
          const Index nu = tl.size(), lo = tl.lo;
          gemm_serial<T>(B, nu, dgx_t + n * H, GH, w_hn_p, lo, false, drh.data() + lo, H);
          for (Index b = 0; b < B; ++b) {
            if (!seq.active(t, b)) continue;
            const T* gr = gates_t + b * GH;
            ConstArrMap<T> rr(gr + r * H + lo, nu), d(drh.data() + b * H + lo, nu);
            ArrMap<T>(dgx_t + b * GH + r * H + lo, nu) =
                d * ConstArrMap<T>(h_prev + b * H + lo, nu) * rr * (T(1) - rr);
            ArrMap<T>(dh_out + b * H + lo, nu) += d * rr;
          }
        }
        step_end.wait();
      }
      recurrent_backprop<T>(dh_out, dh_in, dgh_t, GH, w_hh_p, dg_rows, bp_scratch, seq, t, true,
                            step_end);
    }
  });

  // After the walk: the big GEMMs and reductions over the gate gradients.
  run_threads(gth, [&] {
    input_grads<T>(g.dx, g.dw_ih, g.db_ih, dgx.data(), x, w_ih_p, seq, sum_rows, dx_rows,
                   tn_scratch);
    column_sums<T>(g.db_hh, dgh, TB, GH, GH);
    if (lbr) {
      prev_state_weight_grad<T>(g.dw_hh, dgh, GH, GH, cache.h, h0, H, seq, sum_rows, tn_scratch);
    } else {
      prev_state_weight_grad<T>(g.dw_hh, dgh, GH, 2 * H, cache.h, h0, H, seq, sum_rows, tn_scratch);
#pragma omp for schedule(static)
      for (Index t = 0; t < Tn; ++t) {
        const T* hp = seq.prev_state<T>(cache.h, h0, t, H);
        for (Index b = 0; b < B; ++b)
          ArrMap<T>(rh_all.data() + (t * B + b) * H, H) =
              ConstArrMap<T>(cache.gates + (t * B + b) * GH + r * H, H) *
              ConstArrMap<T>(hp + b * H, H);
      }
      par_gemm_tn<T>(H, H, TB, dgh + n * H, GH, rh_all.data(), H, false, g.dw_hh + n * H * H, H,
                     tn_scratch);
    }
  });

  dh.copy_result(Tn, g.dh0);
}

#define RNNFAST_INSTANTIATE(T)                                                                  \
  template void gru_forward<T>(T*, T*, const GruCache<T>&, const T*, const T*,                 \
                               const GruWeights<T>&, const GruShape&);                         \
  template void gru_backward<T>(const GruGrads<T>&, const T*, const T*, const T*, const T*,    \
                                const GruWeights<T>&, const GruCache<T>&, const GruShape&);
RNNFAST_INSTANTIATE(float)
RNNFAST_INSTANTIATE(double)
#undef RNNFAST_INSTANTIATE

}  // namespace rnnfast
