// The one GEMM seam of rnnfast. Every matrix product of the kernels goes through these functions,
// so the choice of GEMM implementation lives here and nowhere else.
//
// Row-major operands with leading dimensions; C = beta * C + op(A) * op(B), beta in {0, 1}.
//   gemm_nt: A (M,K), B (N,K)  ->  C (M,N) += A B^T
//   gemm_nn: A (M,K), B (K,N)  ->  C (M,N) += A B
//   gemm_tn: A (K,M), B (K,N)  ->  C (M,N) += A^T B
// The par_* forms split C into fixed tiles (kGemmTileM x kGemmTileN) and must be called by every
// thread of an OpenMP parallel region (or outside one, then they run serially). They end with the
// implicit barrier of their `omp for`. Tiles never depend on the thread count (see common.h).
#pragma once

#include "common.h"

namespace rnnfast {

constexpr Index kGemmTileM = 256;
constexpr Index kGemmTileN = 256;

template <typename T>
inline void gemm_nt(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                    bool accumulate, T* C, Index ldc) {
  ConstMatMap<T> a(A, M, K, Eigen::OuterStride<>(lda));
  ConstMatMap<T> b(B, N, K, Eigen::OuterStride<>(ldb));
  MatMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (accumulate) c.noalias() += a * b.transpose();
  else c.noalias() = a * b.transpose();
}

template <typename T>
inline void gemm_nn(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                    bool accumulate, T* C, Index ldc) {
  ConstMatMap<T> a(A, M, K, Eigen::OuterStride<>(lda));
  ConstMatMap<T> b(B, K, N, Eigen::OuterStride<>(ldb));
  MatMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (accumulate) c.noalias() += a * b;
  else c.noalias() = a * b;
}

template <typename T>
inline void gemm_tn(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                    bool accumulate, T* C, Index ldc) {
  ConstMatMap<T> a(A, K, M, Eigen::OuterStride<>(lda));
  ConstMatMap<T> b(B, K, N, Eigen::OuterStride<>(ldb));
  MatMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (accumulate) c.noalias() += a.transpose() * b;
  else c.noalias() = a.transpose() * b;
}

// Calls f(m0, m1, n0, n1) for every fixed tile of an M x N output, tiles shared among the threads.
template <typename F>
inline void for_each_tile(Index M, Index N, F&& f) {
  const Index tm = (M + kGemmTileM - 1) / kGemmTileM;
  const Index tn = (N + kGemmTileN - 1) / kGemmTileN;
#pragma omp for schedule(static)
  for (Index k = 0; k < tm * tn; ++k) {
    const Index m0 = (k / tn) * kGemmTileM, n0 = (k % tn) * kGemmTileN;
    const Index m1 = m0 + kGemmTileM < M ? m0 + kGemmTileM : M;
    const Index n1 = n0 + kGemmTileN < N ? n0 + kGemmTileN : N;
    f(m0, m1, n0, n1);
  }
}

template <typename T>
inline void par_gemm_nt(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                        bool accumulate, T* C, Index ldc) {
  for_each_tile(M, N, [&](Index m0, Index m1, Index n0, Index n1) {
    gemm_nt(m1 - m0, n1 - n0, K, A + m0 * lda, lda, B + n0 * ldb, ldb, accumulate,
            C + m0 * ldc + n0, ldc);
  });
}

template <typename T>
inline void par_gemm_nn(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                        bool accumulate, T* C, Index ldc) {
  for_each_tile(M, N, [&](Index m0, Index m1, Index n0, Index n1) {
    gemm_nn(m1 - m0, n1 - n0, K, A + m0 * lda, lda, B + n0, ldb, accumulate,
            C + m0 * ldc + n0, ldc);
  });
}

template <typename T>
inline void par_gemm_tn(Index M, Index N, Index K, const T* A, Index lda, const T* B, Index ldb,
                        bool accumulate, T* C, Index ldc) {
  for_each_tile(M, N, [&](Index m0, Index m1, Index n0, Index n1) {
    gemm_tn(m1 - m0, n1 - n0, K, A + m0, lda, B + n0, ldb, accumulate, C + m0 * ldc + n0, ldc);
  });
}

}  // namespace rnnfast
