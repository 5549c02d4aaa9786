// LSTM forward / backward kernels. Equations and layouts: lstm.h and common.h.
//
// Forward: per chunk of steps one GEMM projects the inputs (into the cache when training), then per
// step each tile of hidden units does one GEMM against its packed rows of w_hh and the fused gate
// pass for its units; with a projection a second phase forms h = m w_hr^T by tiles of P.
// Backward: per step (reverse processing order) the fused pass turns dh, dc into the gate
// pre-activation gradients dG for each tile, then dh_prev = dG w_hh by tiles of P; after the loop
// dx, dw_ih, dw_hh, the biases, dw_hr and the peepholes are large GEMMs / reductions over dG.
#include "lstm.h"

#include "activations.h"
#include "seq.h"

namespace rnnfast {
namespace {

using namespace lstm_gate;

// Fused gate pass of one batch row for units [lo, hi). `a` holds x_t w_ih^T (PyTorch row layout,
// 4H) and is overwritten with the gates (the float pass below leaves it as it is unless
// keep_gates: inference needs no gates); `r` holds h_{t-1} w_hh^T in tile layout (gate-major, n
// units each); `bias` is b_ih + b_hh (4H) or null.
template <typename T>
inline void lstm_row_forward(T* a, const T* r, const T* bias, const T* peep, const T* c_prev,
                             T* c_new, T* m, Index H, Tile tl, bool coupled, bool /*keep_gates*/) {
  const Index n = tl.size(), lo = tl.lo;
  ArrMap<T> gi(a + i * H + lo, n), gf(a + f * H + lo, n), gg(a + g * H + lo, n),
      go(a + o * H + lo, n);
  if (bias != nullptr) {
    gi += ConstArrMap<T>(r + i * n, n) + ConstArrMap<T>(bias + i * H + lo, n);
    gf += ConstArrMap<T>(r + f * n, n) + ConstArrMap<T>(bias + f * H + lo, n);
    gg += ConstArrMap<T>(r + g * n, n) + ConstArrMap<T>(bias + g * H + lo, n);
    go += ConstArrMap<T>(r + o * n, n) + ConstArrMap<T>(bias + o * H + lo, n);
  } else {
    gi += ConstArrMap<T>(r + i * n, n);
    gf += ConstArrMap<T>(r + f * n, n);
    gg += ConstArrMap<T>(r + g * n, n);
    go += ConstArrMap<T>(r + o * n, n);
  }
  ConstArrMap<T> cp(c_prev + lo, n);
  ArrMap<T> cn(c_new + lo, n);
  if (peep != nullptr) gi += ConstArrMap<T>(peep + 0 * H + lo, n) * cp;
  sigmoid_inplace(gi.data(), n);
  if (coupled) {
    gf = T(1) - gi;
  } else {
    if (peep != nullptr) gf += ConstArrMap<T>(peep + 1 * H + lo, n) * cp;
    sigmoid_inplace(gf.data(), n);
  }
  tanh_inplace(gg.data(), n);
  cn = gf * cp + gi * gg;
  if (peep != nullptr) go += ConstArrMap<T>(peep + 2 * H + lo, n) * cn;
  sigmoid_inplace(go.data(), n);
  tanh_to(m + lo, c_new + lo, n);
  ArrMap<T>(m + lo, n) *= go;
}

// The float gate pass, fused: per packet of units, every operand is loaded once, all gates are
// computed in registers and the results stored once (the generic pass above makes a dozen short
// passes). The arithmetic is the generic pass's, operation for operation. Flattened: GCC 12 left
// Eigen's tanh an out-of-line call here (LSTM forward 0.97x-1.00x the time inlined, B = 16-64,
// in-process pairs, Zen 3; flattening the backward pass as well took 1.01x-1.05x in training).
[[gnu::flatten]] inline void lstm_row_forward(float* a, const float* r, const float* bias,
                                              const float* peep, const float* c_prev,
                                              float* c_new, float* m, Index H, Tile tl,
                                              bool coupled, bool keep_gates) {
  using namespace Eigen::internal;
  using Pk = FloatPacket;
  const Index n = tl.size(), lo = tl.lo;
  enum { A, R, BIAS, PEEP, CP, CN, M };
  const Lanes gates = keep_gates ? out_lanes(a + lo, H, count) : in_lanes(a + lo, H, count);
  const std::array<Lanes, 7> ops{gates, in_lanes(r, n, count),
                                 in_lanes(bias != nullptr ? bias + lo : nullptr, H, count),
                                 in_lanes(peep != nullptr ? peep + lo : nullptr, H, 3),
                                 in_lanes(c_prev + lo), out_lanes(c_new + lo), out_lanes(m + lo)};
  fused_pass(n, ops, [coupled](const std::array<Lanes, 7>& v, Index u) {
    Pk ri = lanes_load(v[R], i, u), rf = lanes_load(v[R], f, u), rg = lanes_load(v[R], g, u),
       ro = lanes_load(v[R], o, u);
    if (v[BIAS].p != nullptr) {
      ri = padd(ri, lanes_load(v[BIAS], i, u));
      rf = padd(rf, lanes_load(v[BIAS], f, u));
      rg = padd(rg, lanes_load(v[BIAS], g, u));
      ro = padd(ro, lanes_load(v[BIAS], o, u));
    }
    Pk ai = padd(lanes_load(v[A], i, u), ri), af = padd(lanes_load(v[A], f, u), rf),
       ag = padd(lanes_load(v[A], g, u), rg), ao = padd(lanes_load(v[A], o, u), ro);
    const Pk cp = lanes_load(v[CP], 0, u);
    const bool peep = v[PEEP].p != nullptr;
    if (peep) ai = padd(ai, pmul(lanes_load(v[PEEP], 0, u), cp));
    ai = sigmoid_packet(ai);
    if (coupled) {
      af = psub(pset1<Pk>(1.0f), ai);
    } else {
      if (peep) af = padd(af, pmul(lanes_load(v[PEEP], 1, u), cp));
      af = sigmoid_packet(af);
    }
    ag = tanh_packet(ag);
    const Pk cn = padd(pmul(af, cp), pmul(ai, ag));
    if (peep) ao = padd(ao, pmul(lanes_load(v[PEEP], 2, u), cn));
    ao = sigmoid_packet(ao);
    if (v[A].out) {
      lanes_store(v[A], i, u, ai);
      lanes_store(v[A], f, u, af);
      lanes_store(v[A], g, u, ag);
      lanes_store(v[A], o, u, ao);
    }
    lanes_store(v[CN], 0, u, cn);
    lanes_store(v[M], 0, u, pmul(tanh_packet(cn), ao));
  });
}

// Backward gate pass of one active batch row for units [lo, hi): from dh (gradient w.r.t. m_t,
// units [lo, hi) at dh + lo) and the carried dc (updated in place to the gradient w.r.t. c_{t-1}),
// writes the pre-activation gradients dg (4H row layout).
template <typename T>
inline void lstm_row_backward(T* dg, T* dc, const T* dh, const T* gates, const T* c_t,
                              const T* c_prev, const T* peep, Index H, Tile tl, bool coupled) {
  const Index n = tl.size(), lo = tl.lo;
  ConstArrMap<T> gi(gates + i * H + lo, n), gf(gates + f * H + lo, n), gg(gates + g * H + lo, n),
      go(gates + o * H + lo, n);
  ConstArrMap<T> dhv(dh + lo, n), ct(c_t + lo, n), cp(c_prev + lo, n);
  ArrMap<T> dct(dc + lo, n);
  ArrMap<T> dai(dg + i * H + lo, n), daf(dg + f * H + lo, n), dag(dg + g * H + lo, n),
      dao(dg + o * H + lo, n);
  T tc_buf[kMaxTileUnits];
  tanh_to(tc_buf, c_t + lo, n);
  ConstArrMap<T> tc(tc_buf, n);
  dao = dhv * tc * go * (T(1) - go);
  dct += dhv * go * (T(1) - tc * tc);
  if (peep != nullptr) dct += dao * ConstArrMap<T>(peep + 2 * H + lo, n);
  // Gradients w.r.t. the gate values, then through their nonlinearities.
  if (coupled) {
    dai = (dct * gg - dct * cp) * gi * (T(1) - gi);
    daf.setZero();
  } else {
    dai = dct * gg * gi * (T(1) - gi);
    daf = dct * cp * gf * (T(1) - gf);
  }
  dag = dct * gi * (T(1) - gg * gg);
  dct *= gf;
  if (peep != nullptr) {
    dct += dai * ConstArrMap<T>(peep + 0 * H + lo, n);
    if (!coupled) dct += daf * ConstArrMap<T>(peep + 1 * H + lo, n);
  }
}

// The float backward gate pass, fused as the forward one; the arithmetic is the generic pass's,
// operation for operation.
inline void lstm_row_backward(float* dg, float* dc, const float* dh, const float* gates,
                              const float* c_t, const float* c_prev, const float* peep, Index H,
                              Tile tl, bool coupled) {
  using namespace Eigen::internal;
  using Pk = FloatPacket;
  const Index lo = tl.lo;
  enum { DG, DC, DH, GATES, CT, CP, PEEP };
  const std::array<Lanes, 7> ops{out_lanes(dg + lo, H, count), out_lanes(dc + lo),
                                 in_lanes(dh + lo),            in_lanes(gates + lo, H, count),
                                 in_lanes(c_t + lo),           in_lanes(c_prev + lo),
                                 in_lanes(peep != nullptr ? peep + lo : nullptr, H, 3)};
  fused_pass(tl.size(), ops, [coupled](const std::array<Lanes, 7>& v, Index u) {
    const Pk one = pset1<Pk>(1.0f);
    const Pk gi = lanes_load(v[GATES], i, u), gf = lanes_load(v[GATES], f, u),
             gg = lanes_load(v[GATES], g, u), go = lanes_load(v[GATES], o, u);
    const Pk dh = lanes_load(v[DH], 0, u), cp = lanes_load(v[CP], 0, u);
    const Pk tc = tanh_packet(lanes_load(v[CT], 0, u));
    const bool peep = v[PEEP].p != nullptr;
    const Pk dao = pmul(pmul(pmul(dh, tc), go), psub(one, go));
    Pk dct = padd(lanes_load(v[DC], 0, u), pmul(pmul(dh, go), psub(one, pmul(tc, tc))));
    if (peep) dct = padd(dct, pmul(dao, lanes_load(v[PEEP], 2, u)));
    Pk dai, daf;
    if (coupled) {
      dai = pmul(pmul(psub(pmul(dct, gg), pmul(dct, cp)), gi), psub(one, gi));
      daf = pzero(one);
    } else {
      dai = pmul(pmul(pmul(dct, gg), gi), psub(one, gi));
      daf = pmul(pmul(pmul(dct, cp), gf), psub(one, gf));
    }
    const Pk dag = pmul(pmul(dct, gi), psub(one, pmul(gg, gg)));
    dct = pmul(dct, gf);
    if (peep) {
      dct = padd(dct, pmul(dai, lanes_load(v[PEEP], 0, u)));
      if (!coupled) dct = padd(dct, pmul(daf, lanes_load(v[PEEP], 1, u)));
    }
    lanes_store(v[DG], i, u, dai);
    lanes_store(v[DG], f, u, daf);
    lanes_store(v[DG], g, u, dag);
    lanes_store(v[DG], o, u, dao);
    lanes_store(v[DC], 0, u, dct);
  });
}

}  // namespace

template <typename T>
void lstm_forward(T* y, T* h_n, T* c_n, const LstmCache<T>& cache, const T* x, const T* h0,
                  const T* c0, const LstmWeights<T>& w, const LstmShape& s) {
  const Index B = s.B, I = s.I, H = s.H, P = s.P, GH = count * H;
  const bool training = cache.gates != nullptr;
  const bool proj = w.w_hr != nullptr;
  const Seq seq = Seq::of(s.T, B, s.reverse, s.lengths);
  const Index ntiles = tile_count(H), ptiles = tile_count(P);
  if (const Index Ta = active_steps(seq); Ta < s.T) {  // see active_steps
    lstm_forward(y, h_n, c_n, cache, x, h0, c0, w, first_steps(s, Ta));
    zero_steps(y, Ta, seq, P);
    if (training) {
      zero_steps(cache.gates, Ta, seq, GH);
      carry_steps(cache.c, c0, Ta, seq, H);
      carry_steps(cache.h, h0, Ta, seq, P);
    }
    return;
  }

  // Everything is allocated before the parallel region: nothing throws inside it.
  const PackedB<T> w_ih_t = pack_weight<T>(w.w_ih, GH, I, seq);
  const PackedB<T> packed = pack_gate_tiles(w.w_hh, 0, count, H, P, seq);
  const PackedB<T> w_hr_t = proj ? pack_weight<T>(w.w_hr, P, H, seq) : PackedB<T>();
  const int nth = region_threads(double(B) * GH * (P + I));
  const ProjectionPlan plan = projection_plan(seq, GH, I, nth, training);
  Buffer<T> xp_ws(projection_workspace(plan, seq, GH, training));
  Buffer<T> rec(ntiles * B * count * kMaxTileUnits);
  T* const h_saved = hidden_states(cache.h, y, seq);
  Buffer<T> ring_h(h_saved != nullptr ? 0 : 2 * B * P), ring_c(training ? 0 : 2 * B * H);
  Buffer<T> m_ws(proj ? B * H : 0);
  const Buffer<T> bias = fold_biases(w.b_ih, w.b_hh, GH);
  const StateSlots<T> hs{h_saved, ring_h.data(), h0, P}, cs{cache.c, ring_c.data(), c0, H};

  const ActiveRows<T> h_rows(seq, P, nth);
  const StepRows active(seq, 0, seq.T);
  ChunkProjection<T> projection(seq, active, I, GH);
  StepBarrier step_end;
  TileClaims claims(ntiles);
  forward_scan<T>(nth, plan, seq, cache.gates, xp_ws.data(), x, w_ih_t, I, projection,
                  [&](Index k, Index t, T* a_t, const T* x_t) {
    const T* h_prev = hs.prev(seq, k, t);
    const T* c_prev = cs.prev(seq, k, t);
    T* h_new = hs.next(seq, k, t);
    T* c_new = cs.next(seq, k, t);
    T* y_t = y + t * B * P;
    T* m = proj ? m_ws.data() : h_new;  // without projection, h_t = m_t
    Index nact, lda;
    const T* h_act = h_rows.gather(h_prev, P, t, nact, lda);

    step_tiles(claims, k, a_t, x_t, I, w_ih_t, count, H, B, ntiles, [&](Index tile) {
      const Tile tl = tile_at(tile, H);
      const Index n = tl.size();
      T* r = tile_scratch(rec, tile, B, count);
      prefetch_gate_units(a_t, count, H, tl);  // row 0 (see prefetch_gate_units)
      tile_recurrent_gemm<T>(r, count * n, h_act, lda, packed, count, nact, tl);
      for (Index b = 0, i = 0; b < B; ++b) {
        T* a_row = a_t + b * GH;
        if (b + 1 < B) prefetch_gate_units(a_row + GH, count, H, tl);
        const bool act = seq.active(t, b);
        if (act) {
          lstm_row_forward(a_row, r + (i++) * count * n, bias_or_null(bias), w.w_peep,
                           c_prev + b * H, c_new + b * H, m + b * H, H, tl, s.coupled,
                           training);
        } else {
          if (training)  // the cached gates are 0 at inactive rows; in inference nothing reads them
            for (Index gate = 0; gate < count; ++gate)
              ArrMap<T>(a_row + gate * H + tl.lo, n).setZero();
          copy_units(c_new + b * H, c_prev + b * H, tl);
          if (!proj) copy_units(h_new + b * P, h_prev + b * P, tl);
        }
        if (!proj) emit_output(y_t + b * P, h_new + b * P, tl, act);
      }
    });
    step_end.wait();
    if (proj) {
#pragma omp for schedule(static) nowait
      for (Index tile = 0; tile < ptiles; ++tile) {
        const Tile tl = tile_at(tile, P);
        gemm_serial<T>(B, tl.size(), m, H, w_hr_t, tl.lo, false, h_new + tl.lo, P);
        for (Index b = 0; b < B; ++b) {
          const bool act = seq.active(t, b);
          if (!act) copy_units(h_new + b * P, h_prev + b * P, tl);
          emit_output(y_t + b * P, h_new + b * P, tl, act);
        }
      }
      step_end.wait();
    }
  });

  std::copy(hs.last(seq), hs.last(seq) + B * P, h_n);
  std::copy(cs.last(seq), cs.last(seq) + B * H, c_n);
}

template <typename T>
void lstm_backward(const LstmGrads<T>& g, const T* dy, const T* dh_n, const T* dc_n, const T* x,
                   const T* h0, const T* c0, const LstmWeights<T>& w, const LstmCache<T>& cache,
                   const LstmShape& s) {
  const Index Tn = s.T, B = s.B, I = s.I, H = s.H, P = s.P, GH = count * H, TB = Tn * B;
  const bool proj = w.w_hr != nullptr;
  const Seq seq = Seq::of(Tn, B, s.reverse, s.lengths);
  const Index ntiles = tile_count(H), ptiles = tile_count(P);
  if (const Index Ta = active_steps(seq); Ta < Tn) {
    lstm_backward(g, dy, dh_n, dc_n, x, h0, c0, w, cache, first_steps(s, Ta));
    zero_steps(g.dx, Ta, seq, I);
    return;
  }

  const PackedB<T> w_ih_p = PackedB<T>::from_rows(w.w_ih, GH, I, I);
  const PackedB<T> w_hh_p = PackedB<T>::from_rows(w.w_hh, GH, P, P);
  const PackedB<T> w_hr_p = proj ? PackedB<T>::from_rows(w.w_hr, P, H, H) : PackedB<T>();
  Buffer<T> dgates(TB * GH);
  GradRing<T> dh(B, P, dh_n);
  Buffer<T> dc(B * H, T(0));
  Buffer<T> dht(proj ? TB * P : 0), dm(B * H), m_all(proj ? TB * H : 0);
  if (dc_n != nullptr) std::copy(dc_n, dc_n + B * H, dc.begin());

  const int nth = region_threads(double(B) * GH * (P + I));
  const int gth =
      gemm_threads(nth, double(TB) * (GH * (2 * I + P) + (proj ? P * H : 0)), std::min(I, P));
  const ActiveRows<T> dg_rows(seq, GH, nth);
  Buffer<T> bp_scratch(ptiles * B * kMaxTileUnits);
  Buffer<T> tn_scratch(tn_scratch_size<T>(std::max(std::max(I, P), H), gth));
  const GradRows sum_rows(seq);
  ChunkProjection<T> dx_rows(seq, sum_rows.all, GH, I);
  StepBarrier step_end;
  run_threads(nth, [&] {
    for (Index k = Tn - 1; k >= 0; --k) {
      const Index t = seq.time(k);
      const Index step = Tn - 1 - k;  // how many steps were walked back already
      const T* dh_in = dh.in(step);
      T* dh_out = dh.out(step);
      const T* gates_t = cache.gates + t * B * GH;
      const T* c_t = cache.c + t * B * H;
      const T* c_prev = seq.prev_state<T>(cache.c, c0, t, H);
      T* dg_t = dgates.data() + t * B * GH;
      const T* dy_t = dy != nullptr ? dy + t * B * P : nullptr;

      // The gradient w.r.t. h_t: dy_t (active rows only) plus the carried dh.
      T* dht_t = proj ? dht.data() + t * B * P : nullptr;
      if (proj) {
#pragma omp for schedule(static) nowait
        for (Index tile = 0; tile < ptiles; ++tile) {
          const Tile tl = tile_at(tile, P);
          for (Index b = 0; b < B; ++b) {
            ArrMap<T> d(dht_t + b * P + tl.lo, tl.size());
            if (!seq.active(t, b)) {
              d.setZero();
              continue;
            }
            d = ConstArrMap<T>(dh_in + b * P + tl.lo, tl.size());
            if (dy_t != nullptr) d += ConstArrMap<T>(dy_t + b * P + tl.lo, tl.size());
          }
        }
        step_end.wait();
      }

#pragma omp for schedule(static) nowait
      for (Index tile = 0; tile < ntiles; ++tile) {
        const Tile tl = tile_at(tile, H);
        const Index n = tl.size();
        // dm = the gradient w.r.t. m_t (the unprojected output) for this tile's units.
        if (proj) gemm_serial<T>(B, n, dht_t, P, w_hr_p, tl.lo, false, dm.data() + tl.lo, H);
        for (Index b = 0; b < B; ++b) {
          T* dg_row = dg_t + b * GH;
          if (!seq.active(t, b)) {
            for (Index gate = 0; gate < count; ++gate)
              ArrMap<T>(dg_row + gate * H + tl.lo, n).setZero();
            continue;
          }
          if (!proj) {
            ArrMap<T> d(dm.data() + b * H + tl.lo, n);
            d = ConstArrMap<T>(dh_in + b * P + tl.lo, n);
            if (dy_t != nullptr) d += ConstArrMap<T>(dy_t + b * P + tl.lo, n);
          }
          const T* dm_row = dm.data() + b * H;
          lstm_row_backward(dg_row, dc.data() + b * H, dm_row, gates_t + b * GH,
                               c_t + b * H, c_prev + b * H, w.w_peep, H, tl, s.coupled);
        }
      }
      step_end.wait();

      recurrent_backprop<T>(dh_out, dh_in, dg_t, GH, w_hh_p, dg_rows, bp_scratch, seq, t, false,
                            step_end);
    }
  });

  // After the walk: the big GEMMs and reductions over dG.
  run_threads(gth, [&] {
    const T* dg = dgates.data();
    input_grads<T>(g.dx, g.dw_ih, g.db_ih, dg, x, w_ih_p, seq, sum_rows, dx_rows, tn_scratch);
    prev_state_weight_grad<T>(g.dw_hh, dg, GH, GH, cache.h, h0, P, seq, sum_rows, tn_scratch);
    if (proj) {
#pragma omp for schedule(static)
      for (Index r = 0; r < TB; ++r) {
        tanh_to(m_all.data() + r * H, cache.c + r * H, H);
        ArrMap<T>(m_all.data() + r * H, H) *= ConstArrMap<T>(cache.gates + r * GH + o * H, H);
      }
      par_gemm_tn<T>(P, H, TB, dht.data(), P, m_all.data(), H, false, g.dw_hr, H, tn_scratch);
    }
    if (w.w_peep != nullptr) {
#pragma omp for schedule(static)
      for (Index tile = 0; tile < ntiles; ++tile) {
        const Tile tl = tile_at(tile, H);
        const Index n = tl.size();
        ArrMap<T> dpi(g.dw_peep + 0 * H + tl.lo, n), dpf(g.dw_peep + 1 * H + tl.lo, n),
            dpo(g.dw_peep + 2 * H + tl.lo, n);
        dpi.setZero();
        dpf.setZero();
        dpo.setZero();
        for (Index t = 0; t < Tn; ++t) {
          const T* c_prev = seq.prev_state<T>(cache.c, c0, t, H);
          for (Index b = 0; b < B; ++b) {
            const T* dg_row = dg + (t * B + b) * GH;
            ConstArrMap<T> cp(c_prev + b * H + tl.lo, n), ct(cache.c + (t * B + b) * H + tl.lo, n);
            dpi += ConstArrMap<T>(dg_row + i * H + tl.lo, n) * cp;
            if (!s.coupled) dpf += ConstArrMap<T>(dg_row + f * H + tl.lo, n) * cp;
            dpo += ConstArrMap<T>(dg_row + o * H + tl.lo, n) * ct;
          }
        }
      }
    }
  });

  std::copy(g.db_ih, g.db_ih + GH, g.db_hh);
  dh.copy_result(Tn, g.dh0);
  std::copy(dc.begin(), dc.end(), g.dc0);
}

#define RNNFAST_INSTANTIATE(T)                                                                   \
  template void lstm_forward<T>(T*, T*, T*, const LstmCache<T>&, const T*, const T*, const T*, \
                                const LstmWeights<T>&, const LstmShape&);                      \
  template void lstm_backward<T>(const LstmGrads<T>&, const T*, const T*, const T*, const T*,  \
                                 const T*, const T*, const LstmWeights<T>&,                    \
                                 const LstmCache<T>&, const LstmShape&);
RNNFAST_INSTANTIATE(float)
RNNFAST_INSTANTIATE(double)
#undef RNNFAST_INSTANTIATE

}  // namespace rnnfast
