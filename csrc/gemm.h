// The one GEMM seam of rnnfast: every matrix product of the kernels goes through here.
//
// C (M, N) (+)= A (M, K) * B (K, N), row-major A and C with leading dimensions. B is always a
// PackedB: its columns cut into panels of NR, each panel stored k-major (K x NR, zero-padded past
// N), built once per kernel call from a weight matrix (w: B = w^T) or a row-major operand. The
// recurrent weights are packed once and then reused by every time step (as oneDNN does).
//
// The micro-kernel computes an MR x NR block of C (MR x 2 NR with AVX-512) over a K-block of fixed
// size kKC with FMAs, one k after another (blocks of one or two rows split k into 2-4 chains, see
// the kernels). The summation order of every element of C therefore depends on K and on the row
// count of the GEMM call (or tile) it belongs to only: not on the thread count, not on the
// alignment of any buffer. This is what makes rnnfast's results bitwise reproducible across runs
// and thread counts.
//
// Threads: gemm_serial runs on the calling thread; par_gemm splits C into fixed tiles shared by
// the threads of the enclosing OpenMP region (it must be called by all of them, or outside a
// region) and ends with the implicit barrier of its `omp for`.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common.h"
#include "parallel.h"
#include "workspace.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RNNFAST_GEMM_AVX2 1
#if defined(__AVX512F__)
#define RNNFAST_GEMM_AVX512 1
#endif
#endif

namespace rnnfast {

constexpr Index kKC = 512;  // K-block: fixed, so results do not depend on anything but K
// Rows per micro-tile: with AVX-512, 8 rows of two zmm registers each (16 independent FMA chains);
// with AVX2, 6 rows of two ymm registers each (12).
#if RNNFAST_GEMM_AVX512
constexpr Index kMR = 8;
#else
constexpr Index kMR = 6;
#endif
// Panels of B per micro-tile (see micro_kernel).
#if RNNFAST_GEMM_AVX512
constexpr Index kTilePanels = 2;
#else
constexpr Index kTilePanels = 1;
#endif

template <typename T>
struct Panel;
template <>
struct Panel<float> { static constexpr Index NR = 16; };
template <>
struct Panel<double> { static constexpr Index NR = 8; };

// One row of a panel: dst[0, NR) = src[0, w), then zeros (w <= NR). A full row is a copy of a fixed
// size, which compiles to inlined moves; a runtime size calls memcpy for every 64 bytes (from_rows
// 1.3x-1.8x faster the fixed way at K = 256-1024, N = 64-256, training steps at B = 1-4, T =
// 50-100, H = 100-128 0.95x-0.97x the time; par_gemm_tn: see there).
template <typename T>
inline void copy_panel_row(T* dst, const T* src, Index w) {
  constexpr Index NR = Panel<T>::NR;
  if (w == NR) {
    std::memcpy(dst, src, sizeof(T) * NR);
    return;
  }
  std::memcpy(dst, src, sizeof(T) * w);
  for (Index c = w; c < NR; ++c) dst[c] = T(0);
}

// Rows of A per pass of gemv_nt over the rows of w, for a weight operand (w^T) multiplied straight
// from w's rows (dot products) instead of packed first: a single step of a cell reads each weight
// once, and packing would triple its memory traffic. Which calls do that: seq.h,
// reads_weights_directly.
constexpr Index kDirectMaxRows = 4;

// dst[k * NR + c] = src[c][k] for the NR rows src[0, NR) of a full panel and k in [0, kv): the
// panel rows a packer can write from register transposes (8 x 8 floats or 4 x 4 doubles); returns
// kv, the packer writes the rest one element at a time. A copy, so the panel is bitwise the one
// the element loop writes. With the element loop alone, packing w_ih and w_hh took longer than
// the LSTM step itself at T = 1, B = 5-32: register transposes made such a call 0.52x-0.73x the
// time at H = 256, and the forward at B = 1, T = 100, H = 128 0.63x (Zen 4, 2 threads, medians
// of 8 paired processes).
#if RNNFAST_GEMM_AVX2
// One block of a panel: d[i * NR + r] = s[r][k + i] for i, r < 8 (floats) or 4 (doubles).
inline void transpose_block(const float* const* s, Index k, float* d) {
  constexpr Index NR = Panel<float>::NR;
  __m256 r[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s[i] + k);
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  // u[i]: rows 0-3 of column i (low lane) and of column i + 4 (high lane); u[i + 4]: the same
  // for rows 4-7. The lane swaps below join the halves of each column.
  const __m256 u[8] = {
      _mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
      _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE),
      _mm256_shuffle_ps(t4, t6, 0x44), _mm256_shuffle_ps(t4, t6, 0xEE),
      _mm256_shuffle_ps(t5, t7, 0x44), _mm256_shuffle_ps(t5, t7, 0xEE)};
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(d + i * NR, _mm256_permute2f128_ps(u[i], u[i + 4], 0x20));
    _mm256_storeu_ps(d + (i + 4) * NR, _mm256_permute2f128_ps(u[i], u[i + 4], 0x31));
  }
}
inline void transpose_block(const double* const* s, Index k, double* d) {
  constexpr Index NR = Panel<double>::NR;
  const __m256d r0 = _mm256_loadu_pd(s[0] + k), r1 = _mm256_loadu_pd(s[1] + k);
  const __m256d r2 = _mm256_loadu_pd(s[2] + k), r3 = _mm256_loadu_pd(s[3] + k);
  const __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1);
  const __m256d t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
  _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(d + NR, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(d + 2 * NR, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(d + 3 * NR, _mm256_permute2f128_pd(t1, t3, 0x31));
}
template <typename T>
inline Index transpose_into_panel(const T* const* src, Index K, T* dst) {
  constexpr Index NR = Panel<T>::NR, W = 32 / sizeof(T);  // W x W blocks: one ymm per row
  const Index kv = K - K % W;
  for (Index c0 = 0; c0 < NR; c0 += W)
    for (Index k = 0; k < kv; k += W) transpose_block(src + c0, k, dst + k * NR + c0);
  return kv;
}
#else
template <typename T>
inline Index transpose_into_panel(const T* const*, Index, T*) { return 0; }
#endif

// The B operand of the GEMMs: B (K, N) cut into column panels of NR, each K x NR contiguous and
// zero-padded past N. A B = w^T built with `direct` keeps pointing at w instead (no copy); then its
// column c reads w's row row_of(c) (see from_gate_tiles).
template <typename T>
class PackedB {
 public:
  static constexpr Index NR = Panel<T>::NR;
  PackedB() = default;

  // B = w^T for a row-major weight w (N, K) with leading dimension ldw.
  static PackedB from_weight(const T* w, Index N, Index K, Index ldw, bool direct = false) {
    return from_gate_tiles(w, ldw, 0, 1, N, K, direct);
  }

  // B = the rows of gates [g0, g0 + G) of w (gates*H, K), transposed, with its columns permuted so
  // that tile k of hidden units is one contiguous block of G * tile columns ([gate g0 units of the
  // tile, gate g0+1 units, ...]). A tile starting at unit lo starts at column G * lo, a multiple of
  // NR (see tile_at).
  static PackedB from_gate_tiles(const T* w, Index ldw, Index g0, Index G, Index H, Index K,
                                 bool direct) {
    PackedB p(G * H, K, !direct);
    p.w_ = w;
    p.ldw_ = ldw;
    p.g0_ = g0;
    p.G_ = G;
    p.H_ = H;
    if (direct) return p;
    parallel_for(p.panels_, packing_threads(p.N_ * K), [&](Index j) {
      const T* src[NR];
      T* dst = p.data_.data() + j * K * NR;
      const Index w_cols = std::min(NR, p.N_ - j * NR);
      // The rows of a panel's columns, a run of consecutive rows at a time: row_of per column
      // (integer divisions) took half the time of packing at H = 64-128 (an LSTM's w_hh packed
      // in 11.4 us at H = 128, 6.2 us by runs; the forward at B = 1-4, T = 50-100, H = 100-128
      // 0.95x-0.97x the time, in-process pairs).
      for (Index c = 0; c < w_cols;) {
        const Index row = p.row_of(j * NR + c), run = std::min(p.run_from(j * NR + c), w_cols - c);
        for (Index q = 0; q < run; ++q) src[c + q] = w + (row + q) * ldw;
        c += run;
      }
      // k outer: the panel is written sequentially while NR rows of w are read as streams.
      Index k = w_cols == NR ? transpose_into_panel(src, K, dst) : 0;
      for (dst += k * NR; k < K; ++k, dst += NR) {
        for (Index c = 0; c < w_cols; ++c) dst[c] = src[c][k];
        for (Index c = w_cols; c < NR; ++c) dst[c] = T(0);
      }
    });
    return p;
  }

  // B itself, row-major (K, N) with leading dimension ldb (always packed).
  static PackedB from_rows(const T* b, Index K, Index N, Index ldb) {
    PackedB p(N, K, true);
    parallel_for(p.panels_, packing_threads(N * K), [&](Index j) {
      T* dst = p.data_.data() + j * K * NR;
      const Index w = std::min(NR, N - j * NR);
      for (Index k = 0; k < K; ++k) copy_panel_row(dst + k * NR, b + k * ldb + j * NR, w);
    });
    return p;
  }

  Index N() const { return N_; }
  Index K() const { return K_; }
  bool direct() const { return data_.empty(); }
  // The panel holding column `col` (col must be a multiple of NR).
  const T* at_column(Index col) const { return data_.data() + (col / NR) * K_ * NR; }
  // From one panel to the next.
  Index panel_stride() const { return K_ * NR; }

  // Direct mode: the row of w behind column c, and how many following columns are consecutive rows.
  Index row_of(Index c) const {
    const Tile tl = tile_of_column(c);
    const Index off = c - G_ * tl.lo;
    return (g0_ + off / tl.size()) * H_ + tl.lo + off % tl.size();
  }
  Index run_from(Index c) const {
    const Tile tl = tile_of_column(c);
    return tl.size() - (c - G_ * tl.lo) % tl.size();
  }
  const T* w() const { return w_; }
  Index ldw() const { return ldw_; }

 private:
  // The tile whose block of G * size columns holds column c (it starts at column G * lo).
  Tile tile_of_column(Index c) const { return tile_at(tile_index(c / G_, H_), H_); }
  PackedB(Index N, Index K, bool packed)
      : N_(N), K_(K), panels_((N + NR - 1) / NR),
        data_(packed ? panels_ * K * NR : 0) {}
  Index N_ = 0, K_ = 0, panels_ = 0;
  Buffer<T> data_;  // uninitialised: the packers write every element, padding included
  const T* w_ = nullptr;
  Index ldw_ = 0, g0_ = 0, G_ = 1, H_ = 0;
};

// Prefetches the cache lines of p[0, n) (n >= 1) into L1, the line of the last element included.
template <typename T>
inline void prefetch_range(const T* p, Index n) {
  constexpr Index kLine = 64 / sizeof(T);
  for (Index u = 0; u < n; u += kLine) __builtin_prefetch(p + u);
  __builtin_prefetch(p + n - 1);
}

namespace detail {

// micro_kernel<T, MV, PackedA>: C[MV x nv] (+)= A[MV x K] * Bpanel[K x NR], MV <= kMR, nv <= NR,
// the accumulators in registers. A is row-major with leading dimension lda, or with PackedA a block
// packed k-major (the MV values of column k at a + k * MV, see pack_a_block). Both read the same
// values in the same order: the results are bitwise the same.
template <int MV, bool PackedA>
struct ABlock {
  const Index lda;
  Index at(Index r, Index k) const { return PackedA ? k * MV + r : r * lda + k; }
};

#if RNNFAST_GEMM_AVX2
// v, which the compiler must now hold in a register: a row of B that feeds the FMAs of several
// rows of A is loaded once. (GCC 12 folded the loads of B into the FMAs of the four-row kernel as
// memory operands, loading each row of B once per row of A, and the kernels of two and three rows
// ran as slowly. Zen 4, one thread, an M x 128 x 512 GEMM on B in L2: 2 rows 84 -> 107 GFLOP/s,
// 3 rows 85 -> 116, 4 rows 84 -> 112, the kernels of 5-8 rows unchanged at 116 (they held B in
// registers already); the AVX2 kernel of 2 rows 62 -> 74. The LSTM and GRU forwards at T = 100,
// H = 256, whose steps are such blocks: B = 3-4 0.86x-0.87x the time, B = 2 0.94x-0.95x, 2
// threads, in-process pairs. The same arithmetic in the same order: bitwise the same results.)
template <typename R>
inline R in_register(R v) {
  asm("" : "+v"(v));
  return v;
}

// AVX2 kernels: an MV x NR block of C lives in 2*MV ymm registers; B's panel row is two loads, A's
// element a broadcast. One-row blocks (batch 1) split k four ways (k mod 4) so that four FMA chains
// hide the FMA latency, then add the partial sums in a fixed order; two-row blocks split two ways.
template <typename V>
struct Vec;
template <>
struct Vec<float> {
  using R = __m256;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static R bcast(const float* p) { return _mm256_broadcast_ss(p); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static void store(float* p, R v) { _mm256_storeu_ps(p, v); }
  // Lane masks for gemv_nt's shifted rows (dot_rows): lanes [lo, hi) set.
  using M = __m256i;
  static M lanes(Index lo, Index hi) {
    const __m256i l = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(int(lo)), l),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32(int(hi)), l));
  }
  // p[l] for the lanes of m, 0 elsewhere; the other lanes are not read (they may be unmapped).
  static R load(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  // a * b + c in the lanes of m, c elsewhere (c's bits unchanged there).
  static R fma(R a, R b, R c, M m) {
    return _mm256_blendv_ps(c, _mm256_fmadd_ps(a, b, c), _mm256_castsi256_ps(m));
  }
  // Lane l of the result is lane (l + r) mod 8 of v.
  static R rotate(R v, Index r) {
    const __m256i l = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_permutevar8x32_ps(
        v, _mm256_and_si256(_mm256_add_epi32(l, _mm256_set1_epi32(int(r))), _mm256_set1_epi32(7)));
  }
  // The lane sums of a, b, c, d into out[0..4) (added to what is there with accumulate), each as
  // ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)).
  static void sum4(float* out, R a, R b, R c, R d, bool accumulate) {
    const R q = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1));
    if (accumulate) s = _mm_add_ps(_mm_loadu_ps(out), s);
    _mm_storeu_ps(out, s);
  }
};
template <>
struct Vec<double> {
  using R = __m256d;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const double* p) { return _mm256_loadu_pd(p); }
  static R bcast(const double* p) { return _mm256_broadcast_sd(p); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static void store(double* p, R v) { _mm256_storeu_pd(p, v); }
  using M = __m256i;  // as Vec<float>'s, four lanes of 64 bits
  static M lanes(Index lo, Index hi) {
    const __m256i l = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_set1_epi64x(lo), l),
                               _mm256_cmpgt_epi64(_mm256_set1_epi64x(hi), l));
  }
  static R load(const double* p, M m) { return _mm256_maskload_pd(p, m); }
  static R fma(R a, R b, R c, M m) {
    return _mm256_blendv_pd(c, _mm256_fmadd_pd(a, b, c), _mm256_castsi256_pd(m));
  }
  static R rotate(R v, Index r) {  // lane l <- lane (l + r) mod 4: moves pairs of 32-bit halves
    const __m256i pair = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    const __m256i half = _mm256_setr_epi32(0, 1, 0, 1, 0, 1, 0, 1);
    const __m256i src = _mm256_and_si256(_mm256_add_epi32(pair, _mm256_set1_epi32(int(r))),
                                         _mm256_set1_epi32(3));
    const __m256i idx = _mm256_add_epi32(_mm256_add_epi32(src, src), half);
    return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), idx));
  }
  // The lane sums of a, b, c, d into out[0..4) (as above), each as (l0 + l1) + (l2 + l3).
  static void sum4(double* out, R a, R b, R c, R d, bool accumulate) {
    const R ab = _mm256_hadd_pd(a, b), cd = _mm256_hadd_pd(c, d);
    R s = _mm256_add_pd(_mm256_permute2f128_pd(ab, cd, 0x20), _mm256_permute2f128_pd(ab, cd, 0x31));
    if (accumulate) s = _mm256_add_pd(_mm256_loadu_pd(out), s);
    _mm256_storeu_pd(out, s);
  }
};

// c[0:nv] (+)= (lo, hi), the two registers of one row of the block. The full row is inlined into
// the kernels, a partial one (the last panel of an N that is not a multiple of NR) is a call.
// (Out of line, the kernels spilled their accumulators around the call: LSTM forward 0.97x-0.98x
// the time inlined at B = 16, H = 256, 0.99x-1.00x at B = 64-128; in-process pairs, Zen 3.)
template <typename T>
[[gnu::noinline]] void store_partial_row(T* c, typename Vec<T>::R lo, typename Vec<T>::R hi,
                                         Index nv, bool accumulate) {
  using V = Vec<T>;
  alignas(32) T tmp[Panel<T>::NR];
  V::store(tmp, lo);
  V::store(tmp + Panel<T>::NR / 2, hi);
  for (Index j = 0; j < nv; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
}
template <typename T>
[[gnu::always_inline]] inline void store_row(T* c, typename Vec<T>::R lo, typename Vec<T>::R hi,
                                             Index nv, bool accumulate) {
  using V = Vec<T>;
  constexpr Index H = Panel<T>::NR / 2;
  if (nv != Panel<T>::NR) return store_partial_row<T>(c, lo, hi, nv, accumulate);
  if (accumulate) {
    lo = V::add(V::load(c), lo);
    hi = V::add(V::load(c + H), hi);
  }
  V::store(c, lo);
  V::store(c + H, hi);
}

#if RNNFAST_GEMM_AVX512
// AVX-512 kernels: one row of a panel (NR = 16 floats or 8 doubles) is one zmm register; a
// micro-tile spans two panels (kTilePanels), so an MV x 2NR block of C lives in 2 MV registers.
// Columns past nv are masked off at the store. As in the AVX2 kernels, one-row blocks split k four
// ways and two-row blocks two ways (k mod S), the partial sums added in the same fixed order: for a
// block of the same MV rows, either ISA's kernel sums each element in the same order (the blocks
// themselves differ, kMR being 8 here and 6 with AVX2, so results may differ between the builds).
template <typename V>
struct Zmm;
template <>
struct Zmm<float> {
  using R = __m512;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R bcast(const float* p) { return _mm512_set1_ps(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  using M = __mmask16;  // lane masks, as Vec's
  static M lanes(Index lo, Index hi) { return M(((1u << hi) - 1) & ~((1u << lo) - 1)); }
  static R load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static R fma(R a, R b, R c, M m) { return _mm512_mask3_fmadd_ps(a, b, c, m); }
  static R rotate(R v, Index r) {
    const __m512i l = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_permutexvar_ps(
        _mm512_and_si512(_mm512_add_epi32(l, _mm512_set1_epi32(int(r))), _mm512_set1_epi32(15)),
        v);
  }
  // The lane sums of a, b, c, d into out[0..4): lanes l and l + 8 added first, then as Vec::sum4.
  static void sum4(float* out, R a, R b, R c, R d, bool accumulate) {
    Vec<float>::sum4(out, fold(a), fold(b), fold(c), fold(d), accumulate);
  }
  static __m256 fold(R v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v),
                         _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  }
  // c[0:nv] (+)= v.
  static void store(float* c, R v, Index nv, bool accumulate) {
    const __mmask16 m = nv >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << nv) - 1);
    if (accumulate) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c), v);
    _mm512_mask_storeu_ps(c, m, v);
  }
};
template <>
struct Zmm<double> {
  using R = __m512d;
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static R bcast(const double* p) { return _mm512_set1_pd(*p); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  using M = __mmask8;
  static M lanes(Index lo, Index hi) { return M(((1u << hi) - 1) & ~((1u << lo) - 1)); }
  static R load(const double* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  static R fma(R a, R b, R c, M m) { return _mm512_mask3_fmadd_pd(a, b, c, m); }
  static R rotate(R v, Index r) {
    const __m512i l = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm512_permutexvar_pd(
        _mm512_and_si512(_mm512_add_epi64(l, _mm512_set1_epi64(r)), _mm512_set1_epi64(7)), v);
  }
  static void sum4(double* out, R a, R b, R c, R d, bool accumulate) {
    Vec<double>::sum4(out, fold(a), fold(b), fold(c), fold(d), accumulate);
  }
  static __m256d fold(R v) {
    return _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
  }
  static void store(double* c, R v, Index nv, bool accumulate) {
    const __mmask8 m = nv >= 8 ? __mmask8(0xFF) : __mmask8((1u << nv) - 1);
    if (accumulate) v = _mm512_add_pd(_mm512_maskz_loadu_pd(m, c), v);
    _mm512_mask_storeu_pd(c, m, v);
  }
};

// C[MV x nv] (+)= A[MV x K] * (NP panels of B: the first at b, the next bs further), nv <= NP * NR.
// With two panels, each broadcast of A feeds two FMAs: an 8 x 32 float block takes two loads of B
// and 8 broadcasts per 16 FMAs (one panel: one load and 8 broadcasts per 8 FMAs). Standalone, on
// hot data (Xeon, Ice Lake): 145-156 GFLOP/s on one core against 85-88 for one panel per call and
// 87-91 for the AVX2 kernel.
template <typename T, int MV, bool PackedA, int NP>
inline void micro_kernel(Index K, const T* a, Index lda, const T* b, Index bs, T* c, Index ldc,
                         Index nv, bool accumulate) {
  static_assert(Panel<T>::NR * sizeof(T) == 64, "one panel row per zmm register");
  using V = Zmm<T>;
  using R = typename V::R;
  constexpr Index NR = Panel<T>::NR;
  constexpr int S = MV == 1 ? 4 : MV == 2 ? 2 : 1;  // FMA chains per row and panel
  const ABlock<MV, PackedA> A{lda};
  R acc[NP][S][MV];
#pragma GCC unroll 16
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 16
    for (int q = 0; q < S; ++q)
#pragma GCC unroll 16
      for (int r = 0; r < MV; ++r) acc[p][q][r] = V::zero();
  auto k_step = [&](Index k, int q) {
    R bk[NP];
#pragma GCC unroll 16
    for (int p = 0; p < NP; ++p)
      bk[p] = in_register(V::load(b + p * bs + k * NR));
#pragma GCC unroll 16
    for (int r = 0; r < MV; ++r) {
      const R av = V::bcast(a + A.at(r, k));
#pragma GCC unroll 16
      for (int p = 0; p < NP; ++p) acc[p][q][r] = V::fma(av, bk[p], acc[p][q][r]);
    }
  };
  Index k = 0;
  for (; k + S <= K; k += S)
#pragma GCC unroll 16
    for (int q = 0; q < S; ++q) k_step(k + q, q);
  for (; k < K; ++k) k_step(k, 0);
#pragma GCC unroll 16
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 16
    for (int r = 0; r < MV; ++r) {
      R v = acc[p][0][r];
      if constexpr (S == 4)
        v = V::add(V::add(acc[p][0][r], acc[p][1][r]), V::add(acc[p][2][r], acc[p][3][r]));
      if constexpr (S == 2) v = V::add(acc[p][0][r], acc[p][1][r]);
      V::store(c + r * ldc + p * NR, v, nv - p * NR, accumulate);
    }
}

#else  // AVX2

// Not inlined: inlined into gemm_serial, GCC 12 kept 4-5 of the row pointers of A on the stack and
// reloaded them every k (in the LSTM's and GRU's row-block loops); in a function of its own all
// six fit in registers. Measured on an AMD EPYC (Zen 3, AVX2), 2 threads, paired medians of 8
// alternating processes: LSTM training step B=16, T=100, H=256 0.89x the time, GRU forward B=64,
// T=50, H=512 0.93x, LSTM forward B=64 0.98x and B=128, H=1024 0.99x.
template <typename T, int MV, bool PackedA>
[[gnu::noinline]] void micro_kernel(Index K, const T* a, Index lda, const T* b, T* c, Index ldc,
                                    Index nv, bool accumulate) {
  using V = Vec<T>;
  const ABlock<MV, PackedA> A{lda};
  using R = typename V::R;
  constexpr Index NR = Panel<T>::NR, H = NR / 2;
  if constexpr (MV == 1) {
    R s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
    R t0 = V::zero(), t1 = V::zero(), t2 = V::zero(), t3 = V::zero();
    Index k = 0;
    for (; k + 4 <= K; k += 4) {
      const T* bk = b + k * NR;
      R a0 = V::bcast(a + A.at(0, k)), a1 = V::bcast(a + A.at(0, k + 1)),
        a2 = V::bcast(a + A.at(0, k + 2)), a3 = V::bcast(a + A.at(0, k + 3));
      s0 = V::fma(a0, V::load(bk), s0);
      t0 = V::fma(a0, V::load(bk + H), t0);
      s1 = V::fma(a1, V::load(bk + NR), s1);
      t1 = V::fma(a1, V::load(bk + NR + H), t1);
      s2 = V::fma(a2, V::load(bk + 2 * NR), s2);
      t2 = V::fma(a2, V::load(bk + 2 * NR + H), t2);
      s3 = V::fma(a3, V::load(bk + 3 * NR), s3);
      t3 = V::fma(a3, V::load(bk + 3 * NR + H), t3);
    }
    for (; k < K; ++k) {
      R a0 = V::bcast(a + A.at(0, k));
      s0 = V::fma(a0, V::load(b + k * NR), s0);
      t0 = V::fma(a0, V::load(b + k * NR + H), t0);
    }
    store_row<T>(c, V::add(V::add(s0, s1), V::add(s2, s3)), V::add(V::add(t0, t1), V::add(t2, t3)),
                 nv, accumulate);
  } else if constexpr (MV == 2) {
    R s00 = V::zero(), s01 = V::zero(), s10 = V::zero(), s11 = V::zero();
    R u00 = V::zero(), u01 = V::zero(), u10 = V::zero(), u11 = V::zero();
    Index k = 0;
    for (; k + 2 <= K; k += 2) {
      const T* bk = b + k * NR;
      R b0 = in_register(V::load(bk)), b1 = in_register(V::load(bk + H)),
        b2 = in_register(V::load(bk + NR)), b3 = in_register(V::load(bk + NR + H));
      R x0 = V::bcast(a + A.at(0, k)), x1 = V::bcast(a + A.at(1, k));
      s00 = V::fma(x0, b0, s00);
      s01 = V::fma(x0, b1, s01);
      s10 = V::fma(x1, b0, s10);
      s11 = V::fma(x1, b1, s11);
      R y0 = V::bcast(a + A.at(0, k + 1)), y1 = V::bcast(a + A.at(1, k + 1));
      u00 = V::fma(y0, b2, u00);
      u01 = V::fma(y0, b3, u01);
      u10 = V::fma(y1, b2, u10);
      u11 = V::fma(y1, b3, u11);
    }
    for (; k < K; ++k) {
      R b0 = V::load(b + k * NR), b1 = V::load(b + k * NR + H);
      R x0 = V::bcast(a + A.at(0, k)), x1 = V::bcast(a + A.at(1, k));
      s00 = V::fma(x0, b0, s00);
      s01 = V::fma(x0, b1, s01);
      s10 = V::fma(x1, b0, s10);
      s11 = V::fma(x1, b1, s11);
    }
    store_row<T>(c, V::add(s00, u00), V::add(s01, u01), nv, accumulate);
    store_row<T>(c + ldc, V::add(s10, u10), V::add(s11, u11), nv, accumulate);
  } else {
    // 3 to 6 rows: one chain per register, enough to cover the FMA latency.
    R c00 = V::zero(), c01 = V::zero(), c10 = V::zero(), c11 = V::zero(), c20 = V::zero(),
      c21 = V::zero(), c30 = V::zero(), c31 = V::zero(), c40 = V::zero(), c41 = V::zero(),
      c50 = V::zero(), c51 = V::zero();
    for (Index k = 0; k < K; ++k) {
      const R b0 = in_register(V::load(b + k * NR)), b1 = in_register(V::load(b + k * NR + H));
      R x = V::bcast(a + A.at(0, k));
      c00 = V::fma(x, b0, c00);
      c01 = V::fma(x, b1, c01);
      x = V::bcast(a + A.at(1, k));
      c10 = V::fma(x, b0, c10);
      c11 = V::fma(x, b1, c11);
      x = V::bcast(a + A.at(2, k));
      c20 = V::fma(x, b0, c20);
      c21 = V::fma(x, b1, c21);
      if constexpr (MV > 3) {
        x = V::bcast(a + A.at(3, k));
        c30 = V::fma(x, b0, c30);
        c31 = V::fma(x, b1, c31);
      }
      if constexpr (MV > 4) {
        x = V::bcast(a + A.at(4, k));
        c40 = V::fma(x, b0, c40);
        c41 = V::fma(x, b1, c41);
      }
      if constexpr (MV > 5) {
        x = V::bcast(a + A.at(5, k));
        c50 = V::fma(x, b0, c50);
        c51 = V::fma(x, b1, c51);
      }
    }
    store_row<T>(c, c00, c01, nv, accumulate);
    store_row<T>(c + ldc, c10, c11, nv, accumulate);
    store_row<T>(c + 2 * ldc, c20, c21, nv, accumulate);
    if constexpr (MV > 3) store_row<T>(c + 3 * ldc, c30, c31, nv, accumulate);
    if constexpr (MV > 4) store_row<T>(c + 4 * ldc, c40, c41, nv, accumulate);
    if constexpr (MV > 5) store_row<T>(c + 5 * ldc, c50, c51, nv, accumulate);
  }
}

#endif  // RNNFAST_GEMM_AVX512

#else  // portable micro-kernel: the same order of operations, left to the compiler to vectorise

template <typename T, int MV, bool PackedA>
inline void micro_kernel(Index K, const T* a, Index lda, const T* b, T* c, Index ldc, Index nv,
                         bool accumulate) {
  constexpr Index NR = Panel<T>::NR;
  const ABlock<MV, PackedA> A{lda};
  T acc[MV > 0 ? MV : 1][NR] = {};
  for (Index k = 0; k < K; ++k)
    for (int i = 0; i < MV; ++i) {
      const T av = a[A.at(i, k)];
      for (Index j = 0; j < NR; ++j) acc[i][j] += av * b[k * NR + j];
    }
  for (int i = 0; i < MV; ++i)
    for (Index j = 0; j < nv; ++j)
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

#endif

// micro_tile: C[mv x nv] (+)= A[mv x K] * (the panels of B from b on, bs apart), for a runtime
// mv in [1, kMR] and nv <= kTilePanels * NR.
template <typename T, bool PackedA = false, int MV = 1>
inline void micro_tile(Index mv, Index K, const T* a, Index lda, const T* b, Index bs, T* c,
                       Index ldc, Index nv, bool accumulate) {
  if constexpr (MV < kMR) {
    if (mv != MV)
      return micro_tile<T, PackedA, MV + 1>(mv, K, a, lda, b, bs, c, ldc, nv, accumulate);
  }
#if RNNFAST_GEMM_AVX512
  if (nv > Panel<T>::NR) micro_kernel<T, MV, PackedA, 2>(K, a, lda, b, bs, c, ldc, nv, accumulate);
  else micro_kernel<T, MV, PackedA, 1>(K, a, lda, b, bs, c, ldc, nv, accumulate);
#else
  (void)bs;
  micro_kernel<T, MV, PackedA>(K, a, lda, b, c, ldc, nv, accumulate);
#endif
}

// Packs the kc x rows block A[k, m] (k < kc, m < rows; row-major, leading dimension lda; row k
// read from row krows[k] instead when krows is given) of an A^T operand for
// micro_kernel<PackedA>: row block i (rows [i, i + mv), mv = min(kMR, rows - i)) starts at
// dst + i * kc and holds its mv values of each k contiguously. Each row of the source is read
// once, left to right; the row kAhead rows further is prefetched meanwhile: the rows are lda
// apart (G H elements for the gate gradients, a page or more), so each starts a new page, where
// the hardware prefetcher starts over. (LSTM training step, in-process pairs, Zen 3: 0.92x-0.99x
// the time at B = 16, T = 100, H = 256 and 0.93x-0.98x at B = 64, T = 50, H = 512 on 2 threads;
// on one 0.94x-0.98x and 0.97x-1.00x, once 1.12x in a short noisy run; bitwise the same.)
template <typename T>
inline void pack_a_block(T* dst, const T* A, Index lda, Index kc, Index rows,
                         const Index* krows = nullptr) {
  constexpr Index kAhead = 8;
  auto source_row = [&](Index k) { return A + (krows != nullptr ? krows[k] : k) * lda; };
  for (Index k = 0; k < kc; ++k) {
    const T* src = source_row(k);
    if (k + kAhead < kc) prefetch_range(source_row(k + kAhead), rows);
    for (Index i = 0; i < rows; i += kMR) {
      const Index mv = std::min(kMR, rows - i);
      T* d = dst + i * kc + k * mv;
      if (mv == kMR) std::memcpy(d, src + i, sizeof(T) * kMR);  // a fixed size: inlined moves
      else for (Index r = 0; r < mv; ++r) d[r] = src[i + r];
    }
  }
}

}  // namespace detail

#if RNNFAST_GEMM_AVX2
namespace detail {

// gemv_nt's inner loop: the products of MB rows of A (lda apart) with the rows ws[0, 4) of w, of
// which the first nr are real, into C[MB x nr] (ldc apart), while prefetching next_rows rows of w
// from `next` on (null: none). Each load of w feeds MB FMAs, from registers; every sum is
// accumulated and reduced exactly as with MB = 1, so the blocking changes no result.
//
// Each sum is accumulated in the lanes of one register, lane l taking the products of k = l (mod L)
// in increasing k. `shift` > 0 (see row_shift): every row of w starts `shift` elements past a
// register boundary, so a register loaded at ws[q] + k spans two cache lines, 1 in 4 to 4 in 4 of
// them, and each such load costs two. The loop then moves its registers back to the boundary: the
// first one starts at k = -shift and the last one ends past Kv, both masked to [0, Kv) (masked
// lanes are not read and add nothing); A is loaded at the same k. Lane l then takes k = l - shift
// (mod L), in the same order, and rotating each sum by `shift` lanes gives bitwise the registers of
// the loads from ws[q]. (Standalone, 2 threads streaming 1 MB each with 64-byte loads, Zen 4: rows
// 16 bytes off a boundary took 1.20x the time of aligned rows. The LSTM step, B = 1, H = 256, 2
// threads, from Python, on weights 16 or 48 bytes off: 0.88x-0.90x the time of loading the rows
// where they start; 32 bytes off: 0.96x; 4 alternating processes, Zen 4. NumPy's large arrays
// start 16 bytes past a 64-byte boundary.)
template <typename V, int MB, typename T>
[[gnu::always_inline]] inline void dot_rows(Index K, const T* A, Index lda, const T* const* ws,
                                            Index nr, Index shift, const T* next,
                                            Index next_rows, Index ldw, T* C, Index ldc,
                                            bool accumulate) {
  using R = typename V::R;
  constexpr Index L = sizeof(R) / sizeof(T);  // one register
  constexpr Index kLine = 64 / sizeof(T);     // one cache line: 1 or 2 registers
  const Index Kv = K - K % L;
  R s[MB][4];
  for (int m = 0; m < MB; ++m)
    for (int q = 0; q < 4; ++q) s[m][q] = V::zero();
  auto step = [&](Index k) {
    R w0 = V::load(ws[0] + k), w1 = V::load(ws[1] + k), w2 = V::load(ws[2] + k),
      w3 = V::load(ws[3] + k);
    // Kept in registers (here and below): left to itself, GCC 12 folds the loads of w (or of A)
    // into the FMAs, loading each value MB times per step, and the blocking gained nothing
    // (0.95x-1.01x the time of one row per pass, standalone).
    if (MB > 1) asm("" : "+v"(w0), "+v"(w1), "+v"(w2), "+v"(w3));
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      R av = V::load(A + m * lda + k);
      if (MB > 1) asm("" : "+v"(av));
      s[m][0] = V::fma(av, w0, s[m][0]);
      s[m][1] = V::fma(av, w1, s[m][1]);
      s[m][2] = V::fma(av, w2, s[m][2]);
      s[m][3] = V::fma(av, w3, s[m][3]);
    }
  };
  auto masked_step = [&](Index k, typename V::M lanes) {  // step(k) on some lanes
    const R w0 = V::load(ws[0] + k, lanes), w1 = V::load(ws[1] + k, lanes),
            w2 = V::load(ws[2] + k, lanes), w3 = V::load(ws[3] + k, lanes);
#pragma GCC unroll 4
    for (int m = 0; m < MB; ++m) {
      const R av = V::load(A + m * lda + k, lanes);
      s[m][0] = V::fma(av, w0, s[m][0], lanes);
      s[m][1] = V::fma(av, w1, s[m][1], lanes);
      s[m][2] = V::fma(av, w2, s[m][2], lanes);
      s[m][3] = V::fma(av, w3, s[m][3], lanes);
    }
  };
  Index k = 0;
  if (shift != 0) {
    if (next != nullptr)
      for (Index q = 0; q < next_rows; ++q)
        _mm_prefetch(reinterpret_cast<const char*>(next + q * ldw), _MM_HINT_T0);
    masked_step(-shift, V::lanes(shift, L));
    k = L - shift;
  }
  if (next != nullptr)
    for (; k + kLine <= Kv; k += kLine) {
      for (Index q = 0; q < next_rows; ++q)
        _mm_prefetch(reinterpret_cast<const char*>(next + q * ldw + k), _MM_HINT_T0);
      for (Index l = 0; l < kLine; l += L) step(k + l);
    }
  for (; k + L <= Kv; k += L) step(k);
  if (k < Kv) masked_step(k, V::lanes(0, Kv - k));
  if (shift != 0)
    for (int m = 0; m < MB; ++m)
      for (int q = 0; q < 4; ++q) s[m][q] = V::rotate(s[m][q], shift);
#pragma GCC unroll 4
  for (int m = 0; m < MB; ++m) {
    const T* a = A + m * lda;
    T* c = C + m * ldc;
    if (nr == 4 && Kv == K) {  // the four sums go straight to their four consecutive outputs
      V::sum4(c, s[m][0], s[m][1], s[m][2], s[m][3], accumulate);
      continue;
    }
    alignas(32) T r[4];
    V::sum4(r, s[m][0], s[m][1], s[m][2], s[m][3], false);
    for (Index q = 0; q < nr; ++q) {
      for (Index kt = Kv; kt < K; ++kt) r[q] += a[kt] * ws[q][kt];
      c[q] = accumulate ? c[q] + r[q] : r[q];
    }
  }
}

// dot_rows' shift for the rows of w (ldw apart): how many elements past a register boundary each
// starts, when that is the same for all rows and not 0 (else 0: plain loads), and K fills a
// register.
template <typename V, typename T>
inline Index row_shift(const T* w, Index ldw, Index K) {
  constexpr Index kBytes = sizeof(typename V::R);
  const auto at = reinterpret_cast<std::uintptr_t>(w);
  if (K * Index(sizeof(T)) < kBytes || at % sizeof(T) != 0 || ldw * sizeof(T) % kBytes != 0)
    return 0;
  return Index(at % kBytes / sizeof(T));
}

// gemv_nt for M1 + M2 rows of A: each group of four rows of w is read once (from memory, the
// next group prefetched meanwhile), then used by the M1 rows and the M2 rows after them.
template <typename V, int M1, int M2, typename T>
inline void gemv_rows(Index N, Index K, const T* A, Index lda, const T* w, Index ldw,
                      bool accumulate, T* C, Index ldc) {
  const Index shift = row_shift<V>(w, ldw, K);
  for (Index n = 0; n < N; n += 4) {
    const Index nr = std::min<Index>(4, N - n);
    const T* ws[4];
    for (Index q = 0; q < 4; ++q) ws[q] = w + (n + (q < nr ? q : 0)) * ldw;
    const T* next = n + 4 < N ? w + (n + 4) * ldw : nullptr;  // the first of the next four rows
    const Index next_rows = std::min<Index>(4, N - n - 4);
    dot_rows<V, M1>(K, A, lda, ws, nr, shift, next, next_rows, ldw, C + n, ldc, accumulate);
    if constexpr (M2 > 0)
      dot_rows<V, M2>(K, A + M1 * lda, lda, ws, nr, shift, static_cast<const T*>(nullptr), 0,
                      ldw, C + M1 * ldc + n, ldc, accumulate);
  }
}

}  // namespace detail
#endif

// C (M, N) (+)= A (M, K) * w (N, K)^T as dot products of rows, for M <= kDirectMaxRows: each
// product is summed in the lanes of one register over k (8 floats or 4 doubles with AVX2, twice
// that with AVX-512, which folds them to 8 or 4 first), the lanes then added in a fixed order
// (Vec::sum4), the tail of k last. (With AVX-512 the cell steps took 0.93x (LSTM) and 0.87x (GRU)
// the time of the AVX2 loop, B = 1, H = 256, 2 threads, Xeon Ice Lake, 8 alternating processes.)
// Four rows of w at a time (gemv_rows), read once for all rows of A: up to four rows of A per
// pass over them, their 16 products in registers (with AVX2 two rows per pass, 8 products).
// Against one row of A per pass, which re-read the four rows of w from L1 for each row of A: at
// M = 2-4, K = 256, 0.62x-0.77x the time standalone with w in L2, 0.76x-0.91x from L3 (AVX2:
// 0.64x-0.74x in L2); LSTM and GRU steps at T = 1, B = 2-4, H = 256 0.68x-0.81x (2 threads,
// medians of 10 paired processes; Zen 4). The four lane reductions share one horizontal-add.
// (Eight rows at a time, the same sums: 1.05x the time of four in the LSTM's cell step, AMD EPYC
// Zen 3, 2 threads.) These weights stream from L3 (a cell's step at H = 256 reads 2 MB), and
// four rows of 1 KB are one 4 KB page, where the hardware
// prefetcher starts over: so while multiplying four rows, the loop prefetches the next four, line
// by line. In the LSTM's cell step (B = 1, H = 256, 2 threads) the shared reduction took 0.88x the
// time of storing the lanes and adding them one by one, and the prefetch 0.95x the time without it
// (0.91x on one thread; 0.84x for these dot products alone over the same 2 MB). The four sums of
// a group go to C as one vector store (or add): written to a stack array and read back one by one,
// they cost a store-to-load forwarding stall per group of four 1 KB rows: the cell steps took
// 1.07x (LSTM) and 1.12x (GRU) the time (Zen 3, B = 1, H = 256, 2 threads, in-process pairs of
// the two builds, whose null pair measured 0.99-1.00x; 1.14x-1.16x at H = 128).
template <typename T>
inline void gemv_nt(Index M, Index N, Index K, const T* A, Index lda, const T* w, Index ldw,
                    bool accumulate, T* C, Index ldc) {
#if RNNFAST_GEMM_AVX2
#if RNNFAST_GEMM_AVX512
  using V = detail::Zmm<T>;
#else
  using V = detail::Vec<T>;
#endif
  // Up to four rows of A per pass over four rows of w: with AVX-512 all of them at once (16 zmm
  // sums of 32 registers), with AVX2 two at a time (8 ymm of 16).
  for (Index m = 0; m < M; m += 4) {
    const Index mb = std::min<Index>(4, M - m);
    const T* a = A + m * lda;
    T* c = C + m * ldc;
#if RNNFAST_GEMM_AVX512
    if (mb == 4) detail::gemv_rows<V, 4, 0>(N, K, a, lda, w, ldw, accumulate, c, ldc);
    else if (mb == 3) detail::gemv_rows<V, 3, 0>(N, K, a, lda, w, ldw, accumulate, c, ldc);
#else
    if (mb == 4) detail::gemv_rows<V, 2, 2>(N, K, a, lda, w, ldw, accumulate, c, ldc);
    else if (mb == 3) detail::gemv_rows<V, 2, 1>(N, K, a, lda, w, ldw, accumulate, c, ldc);
#endif
    else if (mb == 2) detail::gemv_rows<V, 2, 0>(N, K, a, lda, w, ldw, accumulate, c, ldc);
    else detail::gemv_rows<V, 1, 0>(N, K, a, lda, w, ldw, accumulate, c, ldc);
  }
#else
  for (Index m = 0; m < M; ++m)
    for (Index n = 0; n < N; ++n) {
      T s = T(0);
      for (Index k = 0; k < K; ++k) s += A[m * lda + k] * w[n * ldw + k];
      T* c = C + m * ldc + n;
      *c = accumulate ? *c + s : s;
    }
#endif
}

// Columns of B per L2-resident block in gemm_serial (a multiple of both NRs).
constexpr Index kSerialNC = 128;

// C (M, N) (+)= A (M, K) * B[:, col0 : col0 + N], on the calling thread. col0 is a multiple of NR.
template <typename T>
inline void gemm_serial(Index M, Index N, const T* A, Index lda, const PackedB<T>& B, Index col0,
                        bool accumulate, T* C, Index ldc) {
  constexpr Index NR = Panel<T>::NR;
  const Index K = B.K();
  if (B.direct()) {
    for (Index j = 0; j < N;) {
      const Index run = std::min(B.run_from(col0 + j), N - j);
      for (Index i = 0; i < M; i += kDirectMaxRows)
        gemv_nt<T>(std::min(kDirectMaxRows, M - i), run, K, A + i * lda, lda,
                   B.w() + B.row_of(col0 + j) * B.ldw(), B.ldw(), accumulate, C + i * ldc + j, ldc);
      j += run;
    }
    return;
  }
  // Loop order: per K-block and block of kSerialNC columns (its B panels, kKC x kSerialNC, stay in
  // L2), each micro-tile row block of A (kMR rows x kKC, read in place with a row stride) stays in
  // L1 while the B panels stream past it sequentially. (Panels outermost instead re-read all of A's
  // strided rows from L2 for every panel: against OpenBLAS's sgemm on one thread, 0.79x instead of
  // 1.02x at M = 96, N = 128, K = 256 and 0.62x instead of 1.00x at M = 256, N = 1024, K = 256.)
  // The M rows are cut into ceil(M / kMR) blocks of near-equal size (16 rows: 5, 5, 6, not 6, 6,
  // 4): a short last block has too few FMA chains to hide their latency and loads B's panels for
  // few rows. AVX2, Zen 3, in-process pairs against blocks of kMR and a remainder: LSTM forward
  // 0.91x-0.95x the time at B = 16-128 (1 and 2 threads), GRU forward 0.96x-0.99x, training
  // 0.97x-0.99x; a null pair of identical builds 0.97x-1.02x.
  const Index blocks = (M + kMR - 1) / kMR;
  for (Index k0 = 0; k0 < K; k0 += kKC) {
    const Index kc = std::min(kKC, K - k0);
    const bool acc = accumulate || k0 > 0;
    for (Index j0 = 0; j0 < N; j0 += kSerialNC) {
      const Index j1 = std::min(N, j0 + kSerialNC);
      for (Index blk = 0; blk < blocks; ++blk) {
        const Index i = blk * M / blocks, mv = (blk + 1) * M / blocks - i;
        for (Index j = j0; j < j1; j += kTilePanels * NR)
          detail::micro_tile<T>(mv, kc, A + i * lda + k0, lda, B.at_column(col0 + j) + k0 * NR,
                                B.panel_stride(), C + i * ldc + j, ldc,
                                std::min(kTilePanels * NR, j1 - j), acc);
      }
    }
  }
}

// Tiles of the threaded GEMM (multiples of kMR and of both NRs), and the columns of the strips
// that the threads share out (a multiple of every micro-tile's width that divides kGemmTileN).
constexpr Index kGemmTileM = 96;
constexpr Index kGemmTileN = 128;
constexpr Index kGemmStripN = 32;

// Calls f(m0, m1, n0, n1) for tiles covering an M x N output once, shared among the threads of the
// enclosing region (all of them call it; it ends with a barrier). The rows are cut into fixed
// tiles of kGemmTileM (the last one shorter), whatever the thread count: the row tile decides each
// element's summation order (gemm_serial's row blocks). The columns are cut into strips of
// kGemmStripN, and the (strip, row tile) pieces, strips outermost, into one contiguous share of
// near-equal work per thread: thread t takes the pieces whose first element, counted strip by
// strip, lies in [t, t + 1) * M * strips / threads. Within its share a thread walks blocks of
// kGemmTileN columns, all row tiles of a block before the next, so that the block of B stays in
// L2 and a thread streams only its own columns of B. (Fixed 96 x 128 tiles dealt out by count left
// the threads' work unequal when N is not a multiple of 256: at M = 264, N = 800, K = 768, 126k
// against 85k elements, 190 GFLOP/s on 2 threads where the shares by work reach 220 (Zen 4). The
// LSTM forward at B = 24, T = 30, I = 768, H = 200, whose input projection is such a GEMM: 0.89x
// the time, the GRU 0.92x, in-process pairs; shapes whose G*H is a multiple of 256 unchanged.)
template <typename F>
inline void for_each_tile(Index M, Index N, F&& f) {
  constexpr Index per_tile = kGemmTileN / kGemmStripN;
  const Index tm = (M + kGemmTileM - 1) / kGemmTileM;
  const Index strips = (N + kGemmStripN - 1) / kGemmStripN;
  const Index nt = omp_get_num_threads(), me = omp_get_thread_num();
  const Index work = M * strips, w0 = work * me / nt, w1 = work * (me + 1) / nt;
  // Piece (u, r) starts at u * M + r * kGemmTileM: the strips of row tile r in [w0, w1) are u in
  // [first(w0), first(w1)).
  auto first = [&](Index w, Index r) {
    const Index off = w - r * kGemmTileM;
    return off <= 0 ? Index(0) : (off + M - 1) / M;
  };
  if (w0 < w1 && M > 0) {
    const Index u_lo = w0 / M, u_hi = std::min(strips, (w1 + M - 1) / M);
    for (Index g = u_lo / per_tile * per_tile; g < u_hi; g += per_tile)
      for (Index r = 0; r < tm; ++r) {
        const Index lo = std::max(g, first(w0, r));
        const Index hi = std::min({g + per_tile, first(w1, r), strips});
        if (lo >= hi) continue;
        const Index m0 = r * kGemmTileM;
        f(m0, std::min(M, m0 + kGemmTileM), lo * kGemmStripN, std::min(N, hi * kGemmStripN));
      }
  }
#pragma omp barrier
}

// C (M, N) (+)= A (M, K) * B, by tiles among the threads of the enclosing region.
template <typename T>
inline void par_gemm(Index M, const T* A, Index lda, const PackedB<T>& B, bool accumulate, T* C,
                     Index ldc) {
  for_each_tile(M, B.N(), [&](Index m0, Index m1, Index n0, Index n1) {
    gemm_serial<T>(m1 - m0, n1 - n0, A + m0 * lda, lda, B, n0, accumulate, C + m0 * ldc + n0, ldc);
  });
}

// Scratch that par_gemm_tn needs for an N-column B with `threads` threads: one packed K-block of
// B (tn_bpack_size elements), then one packed block of A (kGemmTileM x kKC) per thread.
template <typename T>
inline Index tn_bpack_size(Index N) {
  constexpr Index NR = Panel<T>::NR;
  return kKC * ((N + NR - 1) / NR) * NR;
}
template <typename T>
inline Index tn_scratch_size(Index N, int threads) {
  return tn_bpack_size<T>(N) + Index(threads) * kGemmTileM * kKC;
}

// C (M, N) (+)= A^T B with A (K, M) and B (K, N) row-major, K possibly huge (the weight gradients,
// K = T*B); with krows, the sum runs over the K rows krows[0..K) of A and B only (the rows active
// at their step: the others are zero in A). One K-block at a time: the threads first pack the
// block of B into `scratch` (see tn_scratch_size) together, then each row tile of C packs its
// block of A into its thread's part of `scratch` (pack_a_block) and runs the micro-kernels. Every
// element of A and B is copied once per call, whole micro-tile rows and panel rows with copies
// of a fixed size (per element, or memcpy calls of a runtime size, the LSTM training step at
// B = 16, T = 100, H = 256 took 1.04x-1.06x the time on 2 threads, 1.12x on one, Zen 3); the
// summation order is gemm_serial's (kKC blocks, k ascending).
template <typename T>
inline void par_gemm_tn(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                        bool accumulate, T* C, Index ldc, Buffer<T>& scratch,
                        const Index* krows = nullptr) {
  constexpr Index NR = Panel<T>::NR;
  const Index panels = (N + NR - 1) / NR;
  T* const bpack = scratch.data();
  T* const at = bpack + tn_bpack_size<T>(N) + omp_get_thread_num() * kGemmTileM * kKC;
  // The rows of C split evenly among the threads in whole micro-tiles, each share walked in tiles
  // of at most kGemmTileM rows (a fixed tiling left one thread a whole tile more: 12% at M = 1024).
  const Index blocks = (M + kMR - 1) / kMR;
  const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
  const Index r0 = std::min(M, blocks * tid / nth * kMR);
  const Index r1 = std::min(M, blocks * (tid + 1) / nth * kMR);
  for (Index k0 = 0; k0 < K; k0 += kKC) {
    const Index kc = std::min(kKC, K - k0);
#pragma omp for schedule(static)
    for (Index j = 0; j < panels; ++j) {
      T* dst = bpack + j * kc * NR;
      const Index w = std::min(NR, N - j * NR);
      for (Index k = 0; k < kc; ++k) {
        const Index row = krows != nullptr ? krows[k0 + k] : k0 + k;
        copy_panel_row(dst + k * NR, B + row * ldb + j * NR, w);
      }
    }
    const bool acc = accumulate || k0 > 0;
    for (Index m0 = r0; m0 < r1; m0 += kGemmTileM) {
      const Index rows = std::min(kGemmTileM, r1 - m0);
      detail::pack_a_block<T>(at, krows != nullptr ? A + m0 : A + k0 * lda + m0, lda, kc, rows,
                              krows != nullptr ? krows + k0 : nullptr);
      // As in gemm_serial: a row block of the packed A stays in L1 while the B panels of a block
      // of kSerialNC columns stream past it from L2.
      constexpr Index kBlockPanels = kSerialNC / NR;
      for (Index j0 = 0; j0 < panels; j0 += kBlockPanels) {
        const Index j1 = std::min(panels, j0 + kBlockPanels);
        for (Index i = 0; i < rows; i += kMR)
          for (Index j = j0; j < j1; j += kTilePanels) {
            // C (M x N, all of it updated per K-block) lives in memory, not in cache: fetch the
            // block of the next micro-tile while this one computes (+20% at 4096 x 1024, K = 3200;
            // a panel's row of C is one cache line).
            const bool last_col = j + kTilePanels >= j1;
            const Index jn = last_col ? j0 : j + kTilePanels, in = last_col ? i + kMR : i;
            for (Index r = in; r < std::min(in + kMR, rows); ++r)
              for (Index p = jn; p < std::min(jn + kTilePanels, j1); ++p)
                __builtin_prefetch(C + (m0 + r) * ldc + p * NR, 1, 3);
            detail::micro_tile<T, true>(std::min(kMR, rows - i), kc, at + i * kc, 0,
                                        bpack + j * kc * NR, kc * NR,
                                        C + (m0 + i) * ldc + j * NR, ldc,
                                        std::min(kTilePanels * NR, N - j * NR), acc);
          }
      }
    }
#pragma omp barrier
  }
}

}  // namespace rnnfast
