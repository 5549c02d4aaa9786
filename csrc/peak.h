// The ceiling of this build's kernels: float multiply-adds per second, on every thread of a region
// at once, with the vectors the GEMM micro-kernels use (zmm with AVX-512, ymm with AVX2 + FMA;
// in the portable build, multiplies and adds of 8 floats left to the compiler). Twelve independent
// chains per thread in registers, no memory traffic: no kernel of the build can do more work per
// second. rnnfast bench reports it beside the sgemm yardstick, so that a goal which would need
// more than it reads as out of reach on the machine (issue 5).
#pragma once

#include <atomic>
#include <chrono>
#include <vector>

#include "gemm.h"

namespace rnnfast {
namespace detail {

#if RNNFAST_GEMM_AVX512
using PeakVec = Zmm<float>;
#elif RNNFAST_GEMM_AVX2
using PeakVec = Vec<float>;
#else
struct PeakVec {
  struct R {
    float v[8];
  };
  static R fma(R a, R b, R c) {
    for (int l = 0; l < 8; ++l) c.v[l] = a.v[l] * b.v[l] + c.v[l];
    return c;
  }
};
#endif
constexpr int kPeakChains = 12;
constexpr int kPeakLanes = int(sizeof(PeakVec::R) / sizeof(float));

// `iters` rounds of kPeakChains independent multiply-adds c = a * c + b, a just below 1; returns
// the sum of every lane of every chain, so that none of the work can be left out (summing one
// lane of each, GCC computed that lane alone in the portable build, which then credited itself
// with eight: 98 GFLOP/s on one thread, against 47 when every lane is computed).
[[gnu::noinline]] inline float peak_chains(long iters) {
  PeakVec::R acc[kPeakChains], a, b;
  for (int l = 0; l < kPeakLanes; ++l) {
    reinterpret_cast<float*>(&a)[l] = 0.999999f;
    reinterpret_cast<float*>(&b)[l] = 1e-7f;
  }
  for (int q = 0; q < kPeakChains; ++q)
    for (int l = 0; l < kPeakLanes; ++l) reinterpret_cast<float*>(&acc[q])[l] = 1.0f + q;
  for (long n = 0; n < iters; ++n)
#pragma GCC unroll 12
    for (int q = 0; q < kPeakChains; ++q) acc[q] = PeakVec::fma(a, acc[q], b);
  float sum = 0;
  for (int q = 0; q < kPeakChains; ++q)
    for (int l = 0; l < kPeakLanes; ++l) sum += reinterpret_cast<const float*>(&acc[q])[l];
  return sum;
}

}  // namespace detail

// GFLOP/s of one region of `threads` threads, each running about `seconds` of multiply-adds (the
// iteration count is fixed beforehand from a one-thread trial, so every thread does the same work
// and the region lasts as long as its slowest thread). Counts the threads the region really had.
inline double fma_peak_gflops(int threads, double seconds) {
  using clock = std::chrono::steady_clock;
  auto elapsed = [](clock::time_point t0) {
    return std::chrono::duration<double>(clock::now() - t0).count();
  };
  std::vector<float> sums(threads, 0.0f);  // one per thread: the work cannot be left out
  long iters = 1 << 14;
  for (;;) {  // the trial: double the count until a run takes a tenth of `seconds`
    const auto t0 = clock::now();
    sums[0] += detail::peak_chains(iters);
    const double s = elapsed(t0);
    if (s >= seconds / 10 || iters >= (1L << 40)) {
      iters = long(double(iters) * seconds / (s > 0 ? s : 1e-9)) + 1;
      break;
    }
    iters *= 2;
  }
  std::atomic<int> ran{0};
  auto region = [&](long n) {
    run_threads(threads, [&] {
      sums[omp_get_thread_num()] += detail::peak_chains(n);
      ran.fetch_add(1, std::memory_order_relaxed);
    });
  };
  // Untimed, a quarter as long first: a process's first region starts its threads, and an idle
  // core's clock takes a while to rise. The first call of a process can still read low (without
  // this, 107-156 of 230 GFLOP/s in 3 processes of 4; with it, 124 in 1 of 4): take the best of
  // several calls, as rnnfast bench does.
  region(iters / 4);
  ran.store(0);
  const auto t0 = clock::now();
  region(iters);
  const double s = elapsed(t0);
  volatile float sink = 0;
  for (float v : sums) sink = sink + v;
  return 2.0 * ran.load() * double(iters) * detail::kPeakChains * detail::kPeakLanes / s / 1e9;
}

}  // namespace rnnfast
