// The one GEMM seam of rnnfast: every matrix product of the kernels goes through here.
//
// C (M, N) (+)= A (M, K) * B (K, N), row-major A and C with leading dimensions. B is always a
// PackedB: its columns cut into panels of NR, each panel stored k-major (K x NR, zero-padded past
// N), built once per kernel call from a weight matrix (w: B = w^T) or a row-major operand. The
// recurrent weights are packed once and then reused by every time step (as oneDNN does).
//
// The micro-kernel computes an MR x NR block of C over a K-block of fixed size kKC with FMAs, one
// k after another. The summation order of every element of C therefore depends on K only: not on
// the tiling of M and N, not on the thread count, not on the alignment of any buffer. This is what
// makes rnnfast's results bitwise reproducible across runs and thread counts.
//
// Threads: gemm_serial runs on the calling thread; par_gemm splits C into fixed tiles shared by
// the threads of the enclosing OpenMP region (it must be called by all of them, or outside a
// region) and ends with the implicit barrier of its `omp for`.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "common.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RNNFAST_GEMM_AVX2 1
#endif

namespace rnnfast {

constexpr Index kKC = 256;  // K-block: fixed, so results do not depend on anything but K
constexpr Index kMR = 6;    // rows per micro-tile

template <typename T>
struct Panel;
template <>
struct Panel<float> { static constexpr Index NR = 16; };
template <>
struct Panel<double> { static constexpr Index NR = 8; };

// B (K, N) cut into column panels of NR, each K x NR contiguous, zero-padded past N.
template <typename T>
class PackedB {
 public:
  static constexpr Index NR = Panel<T>::NR;
  PackedB() = default;

  // B = w^T for a row-major weight w (N, K) with leading dimension ldw.
  static PackedB from_weight(const T* w, Index N, Index K, Index ldw) {
    PackedB p(N, K);
    for (Index j = 0; j < p.panels_; ++j) {
      T* dst = p.data_.data() + j * K * NR;
      for (Index c = 0; c < NR && j * NR + c < N; ++c) {
        const T* src = w + (j * NR + c) * ldw;
        for (Index k = 0; k < K; ++k) dst[k * NR + c] = src[k];
      }
    }
    return p;
  }

  // B itself, row-major (K, N) with leading dimension ldb.
  static PackedB from_rows(const T* b, Index K, Index N, Index ldb) {
    PackedB p(N, K);
    for (Index j = 0; j < p.panels_; ++j) {
      T* dst = p.data_.data() + j * K * NR;
      const Index w = std::min(NR, N - j * NR);
      for (Index k = 0; k < K; ++k) std::memcpy(dst + k * NR, b + k * ldb + j * NR, sizeof(T) * w);
    }
    return p;
  }

  Index N() const { return N_; }
  Index K() const { return K_; }
  // The panel holding column `col` (col must be a multiple of NR).
  const T* at_column(Index col) const { return data_.data() + (col / NR) * K_ * NR; }

 private:
  PackedB(Index N, Index K)
      : N_(N), K_(K), panels_((N + NR - 1) / NR), data_(static_cast<size_t>(panels_ * K * NR), T(0)) {}
  Index N_ = 0, K_ = 0, panels_ = 0;
  std::vector<T> data_;
};

namespace detail {

// C[mv x nv] (+)= A[mv x K] * Bpanel[K x NR], mv <= kMR, nv <= NR. Accumulators stay in registers.
template <typename T, int MV>
inline void micro_kernel(Index K, const T* a, Index lda, const T* b, T* c, Index ldc, Index nv,
                         bool accumulate);

#if RNNFAST_GEMM_AVX2
template <int MV>
inline void store_rows(const __m256* acc, float* c, Index ldc, Index nv, bool accumulate) {
  for (int i = 0; i < MV; ++i) {
    float* ci = c + i * ldc;
    if (nv == 16) {
      __m256 lo = acc[2 * i], hi = acc[2 * i + 1];
      if (accumulate) {
        lo = _mm256_add_ps(_mm256_loadu_ps(ci), lo);
        hi = _mm256_add_ps(_mm256_loadu_ps(ci + 8), hi);
      }
      _mm256_storeu_ps(ci, lo);
      _mm256_storeu_ps(ci + 8, hi);
    } else {
      alignas(32) float tmp[16];
      _mm256_store_ps(tmp, acc[2 * i]);
      _mm256_store_ps(tmp + 8, acc[2 * i + 1]);
      for (Index j = 0; j < nv; ++j) ci[j] = accumulate ? ci[j] + tmp[j] : tmp[j];
    }
  }
}

template <>
inline void micro_kernel<float, 0>(Index, const float*, Index, const float*, float*, Index, Index,
                                   bool) {}

#define RNNFAST_MK_F32(MV)                                                                   \
  template <>                                                                                \
  inline void micro_kernel<float, MV>(Index K, const float* a, Index lda, const float* b,    \
                                      float* c, Index ldc, Index nv, bool accumulate) {      \
    __m256 acc[2 * MV];                                                                      \
    for (int i = 0; i < 2 * MV; ++i) acc[i] = _mm256_setzero_ps();                           \
    for (Index k = 0; k < K; ++k) {                                                          \
      const __m256 b0 = _mm256_loadu_ps(b + k * 16), b1 = _mm256_loadu_ps(b + k * 16 + 8);   \
      for (int i = 0; i < MV; ++i) {                                                         \
        const __m256 av = _mm256_broadcast_ss(a + i * lda + k);                              \
        acc[2 * i] = _mm256_fmadd_ps(av, b0, acc[2 * i]);                                    \
        acc[2 * i + 1] = _mm256_fmadd_ps(av, b1, acc[2 * i + 1]);                            \
      }                                                                                      \
    }                                                                                        \
    store_rows<MV>(acc, c, ldc, nv, accumulate);                                             \
  }
RNNFAST_MK_F32(1)
RNNFAST_MK_F32(2)
RNNFAST_MK_F32(3)
RNNFAST_MK_F32(4)
RNNFAST_MK_F32(5)
RNNFAST_MK_F32(6)
#undef RNNFAST_MK_F32

template <int MV>
inline void store_rows(const __m256d* acc, double* c, Index ldc, Index nv, bool accumulate) {
  for (int i = 0; i < MV; ++i) {
    double* ci = c + i * ldc;
    if (nv == 8) {
      __m256d lo = acc[2 * i], hi = acc[2 * i + 1];
      if (accumulate) {
        lo = _mm256_add_pd(_mm256_loadu_pd(ci), lo);
        hi = _mm256_add_pd(_mm256_loadu_pd(ci + 4), hi);
      }
      _mm256_storeu_pd(ci, lo);
      _mm256_storeu_pd(ci + 4, hi);
    } else {
      alignas(32) double tmp[8];
      _mm256_store_pd(tmp, acc[2 * i]);
      _mm256_store_pd(tmp + 4, acc[2 * i + 1]);
      for (Index j = 0; j < nv; ++j) ci[j] = accumulate ? ci[j] + tmp[j] : tmp[j];
    }
  }
}

template <>
inline void micro_kernel<double, 0>(Index, const double*, Index, const double*, double*, Index,
                                    Index, bool) {}

#define RNNFAST_MK_F64(MV)                                                                   \
  template <>                                                                                \
  inline void micro_kernel<double, MV>(Index K, const double* a, Index lda, const double* b, \
                                       double* c, Index ldc, Index nv, bool accumulate) {    \
    __m256d acc[2 * MV];                                                                     \
    for (int i = 0; i < 2 * MV; ++i) acc[i] = _mm256_setzero_pd();                          \
    for (Index k = 0; k < K; ++k) {                                                          \
      const __m256d b0 = _mm256_loadu_pd(b + k * 8), b1 = _mm256_loadu_pd(b + k * 8 + 4);   \
      for (int i = 0; i < MV; ++i) {                                                         \
        const __m256d av = _mm256_broadcast_sd(a + i * lda + k);                             \
        acc[2 * i] = _mm256_fmadd_pd(av, b0, acc[2 * i]);                                    \
        acc[2 * i + 1] = _mm256_fmadd_pd(av, b1, acc[2 * i + 1]);                            \
      }                                                                                      \
    }                                                                                        \
    store_rows<MV>(acc, c, ldc, nv, accumulate);                                             \
  }
RNNFAST_MK_F64(1)
RNNFAST_MK_F64(2)
RNNFAST_MK_F64(3)
RNNFAST_MK_F64(4)
RNNFAST_MK_F64(5)
RNNFAST_MK_F64(6)
#undef RNNFAST_MK_F64

#else  // portable micro-kernel: the same order of operations, left to the compiler to vectorise

template <typename T, int MV>
inline void micro_kernel(Index K, const T* a, Index lda, const T* b, T* c, Index ldc, Index nv,
                         bool accumulate) {
  constexpr Index NR = Panel<T>::NR;
  T acc[MV > 0 ? MV : 1][NR] = {};
  for (Index k = 0; k < K; ++k)
    for (int i = 0; i < MV; ++i) {
      const T av = a[i * lda + k];
      for (Index j = 0; j < NR; ++j) acc[i][j] += av * b[k * NR + j];
    }
  for (int i = 0; i < MV; ++i)
    for (Index j = 0; j < nv; ++j)
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

#endif

template <typename T>
inline void micro_dispatch(Index mv, Index K, const T* a, Index lda, const T* b, T* c, Index ldc,
                           Index nv, bool accumulate) {
  switch (mv) {
    case 1: micro_kernel<T, 1>(K, a, lda, b, c, ldc, nv, accumulate); break;
    case 2: micro_kernel<T, 2>(K, a, lda, b, c, ldc, nv, accumulate); break;
    case 3: micro_kernel<T, 3>(K, a, lda, b, c, ldc, nv, accumulate); break;
    case 4: micro_kernel<T, 4>(K, a, lda, b, c, ldc, nv, accumulate); break;
    case 5: micro_kernel<T, 5>(K, a, lda, b, c, ldc, nv, accumulate); break;
    default: micro_kernel<T, 6>(K, a, lda, b, c, ldc, nv, accumulate); break;
  }
}

}  // namespace detail

// C (M, N) (+)= A (M, K) * B[:, col0 : col0 + N], on the calling thread. col0 is a multiple of NR.
template <typename T>
inline void gemm_serial(Index M, Index N, const T* A, Index lda, const PackedB<T>& B, Index col0,
                        bool accumulate, T* C, Index ldc) {
  constexpr Index NR = Panel<T>::NR;
  const Index K = B.K();
  for (Index k0 = 0; k0 < K; k0 += kKC) {
    const Index kc = std::min(kKC, K - k0);
    const bool acc = accumulate || k0 > 0;
    for (Index j = 0; j < N; j += NR) {
      const T* panel = B.at_column(col0 + j) + k0 * NR;
      const Index nv = std::min(NR, N - j);
      for (Index i = 0; i < M; i += kMR)
        detail::micro_dispatch<T>(std::min(kMR, M - i), kc, A + i * lda + k0, lda, panel,
                                  C + i * ldc + j, ldc, nv, acc);
    }
  }
}

// Tiles of the threaded GEMM (multiples of kMR and of both NRs).
constexpr Index kGemmTileM = 96;
constexpr Index kGemmTileN = 128;

// Calls f(m0, m1, n0, n1) for every fixed tile of an M x N output, tiles shared among the threads.
template <typename F>
inline void for_each_tile(Index M, Index N, F&& f) {
  const Index tm = (M + kGemmTileM - 1) / kGemmTileM;
  const Index tn = (N + kGemmTileN - 1) / kGemmTileN;
#pragma omp for schedule(static)
  for (Index k = 0; k < tm * tn; ++k) {
    const Index m0 = (k / tn) * kGemmTileM, n0 = (k % tn) * kGemmTileN;
    f(m0, std::min(M, m0 + kGemmTileM), n0, std::min(N, n0 + kGemmTileN));
  }
}

// C (M, N) (+)= A (M, K) * B, by tiles among the threads of the enclosing region.
template <typename T>
inline void par_gemm(Index M, const T* A, Index lda, const PackedB<T>& B, bool accumulate, T* C,
                     Index ldc) {
  for_each_tile(M, B.N(), [&](Index m0, Index m1, Index n0, Index n1) {
    gemm_serial<T>(m1 - m0, n1 - n0, A + m0 * lda, lda, B, n0, accumulate, C + m0 * ldc + n0, ldc);
  });
}

// C (M, N) (+)= A^T B with A (K, M) and B (K, N) row-major, K possibly huge (weight gradients):
// each tile transposes its block of A into a row-major scratch and packs its block of B, one
// K-block at a time. Same summation order as gemm_serial (kKC blocks, k ascending).
template <typename T>
inline void par_gemm_tn(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                        bool accumulate, T* C, Index ldc) {
  constexpr Index NR = Panel<T>::NR;
  for_each_tile(M, N, [&](Index m0, Index m1, Index n0, Index n1) {
    const Index mt = m1 - m0, nt = n1 - n0;
    alignas(64) T at[kGemmTileM * kKC];
    alignas(64) T bp[kGemmTileN * kKC];
    for (Index k0 = 0; k0 < K; k0 += kKC) {
      const Index kc = std::min(kKC, K - k0);
      for (Index k = 0; k < kc; ++k) {
        const T* arow = A + (k0 + k) * lda + m0;
        for (Index i = 0; i < mt; ++i) at[i * kc + k] = arow[i];
        const T* brow = B + (k0 + k) * ldb + n0;
        for (Index j = 0; j < nt; j += NR) {
          T* dst = bp + (j / NR) * kc * NR + k * NR;
          const Index w = std::min(NR, nt - j);
          std::memcpy(dst, brow + j, sizeof(T) * w);
          for (Index c = w; c < NR; ++c) dst[c] = T(0);
        }
      }
      const bool acc = accumulate || k0 > 0;
      for (Index j = 0; j < nt; j += NR)
        for (Index i = 0; i < mt; i += kMR)
          detail::micro_dispatch<T>(std::min(kMR, mt - i), kc, at + i * kc, kc,
                                    bp + (j / NR) * kc * NR, C + (m0 + i) * ldc + n0 + j, ldc,
                                    std::min(NR, nt - j), acc);
    }
  });
}

}  // namespace rnnfast
