// Where rnnfast decides about threads. One OpenMP parallel region per kernel call owns them; its
// size comes from region_threads(), which runs small problems on one thread (a barrier per step
// costs more than it saves there). Results never depend on the choice (see common.h).
#pragma once

#include <omp.h>

#include <atomic>

#include "common.h"

namespace rnnfast {

// Below this many multiply-adds per recurrent step, a second thread does not pay for its barriers.
constexpr double kParallelStepWork = 96.0 * 1024.0;

// The thread count, one for the whole process (OpenMP's own setting is per calling thread, so a
// count set from one Python thread would not apply to calls from another). 0 = OpenMP's default.
inline std::atomic<int>& thread_setting() {
  static std::atomic<int> n{0};
  return n;
}
// A count for the calls made from one thread only, 0 = none: the layers run the two directions of
// a bidirectional layer side by side, each direction's call on its share of the threads.
inline int& local_thread_setting() {
  static thread_local int n = 0;
  return n;
}
inline int max_threads() {
  if (const int local = local_thread_setting(); local > 0) return local;
  const int n = thread_setting().load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}
inline void set_max_threads(int n) { thread_setting().store(n, std::memory_order_relaxed); }
// The most threads set_num_threads accepts: more than this only oversubscribes, and a runtime
// that cannot create them ends the process (libgomp calls exit).
inline int thread_limit() { return 4 * omp_get_num_procs(); }

// Runs body() on `threads` threads: in one OpenMP parallel region, or on the calling thread outside
// any region when threads is 1. There, the kernels' worksharing loops run serially and their
// barriers do nothing, whereas libgomp ends every barrier with a futex wake-up system call, even
// in a team of one: two per call of a cell step, one or more per step of a small sequence.
template <typename F>
inline void run_threads(int threads, F&& body) {
  if (threads <= 1) {
    body();
    return;
  }
#pragma omp parallel num_threads(threads)
  body();
}

// f(j) for j in [0, n), split statically among `threads` threads (see run_threads).
template <typename F>
inline void parallel_for(Index n, int threads, F&& f) {
  run_threads(threads, [&] {
#pragma omp for schedule(static)
    for (Index j = 0; j < n; ++j) f(j);
  });
}

// Threads for packing a weight of `elements` (a copy: worth splitting only when large).
inline int packing_threads(Index elements) { return elements < (Index(1) << 18) ? 1 : max_threads(); }

// Threads for a region whose recurrent step costs `step_work` multiply-adds.
inline int region_threads(double step_work) {
  return step_work < kParallelStepWork ? 1 : max_threads();
}

}  // namespace rnnfast
