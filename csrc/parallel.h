// Where rnnfast decides about threads. One OpenMP parallel region per kernel call owns them (a
// backward has two: its walk over the steps, then the GEMMs over all of them); its size comes from
// region_threads(), which runs small problems on one thread (a barrier per step costs more than
// it saves there), and gemm_threads(). Results never depend on the choice (see common.h).
#pragma once

#include <omp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "common.h"

namespace rnnfast {

// Below this many multiply-adds per recurrent step, a second thread does not pay for its barriers.
constexpr double kParallelStepWork = 96.0 * 1024.0;
// The same when the cores of the first two threads are far apart (see CoreDistance).
constexpr double kFarParallelStepWork = 160.0 * 1024.0;

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

inline void cpu_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How far apart the cores of a region's first two threads are: the round trip of a cache line
// between them, measured at the start of a region at most every kInterval. A virtual machine's
// vCPUs move between host cores while it runs: on the 2-vCPU Zen 4 development VM the round trip
// went between 60-80 ns and 335-375 ns every few seconds (two cores of one CCX against two CCDs,
// presumably), and a barrier-bound sequence with it: the GRU forward at B = 1, T = 100, H = 128
// took 0.22-0.27 ms on 2 threads nearby, 0.38-0.46 ms far apart, 0.32-0.33 ms on 1 thread either
// way. A step's barrier and the exchange of h_{t-1} cost several round trips, so far apart a
// second thread pays only for more work per step (kFarParallelStepWork, region_threads). This
// measurement (its clock reads included) gave 110-120 ns nearby and 200-240 ns far apart; kFarNs
// lies between. In-process pairs against the fixed threshold, that GRU forward took 0.85x-0.92x
// the time far apart (16 pairs of runs, now on one thread) and 0.98x-1.03x nearby; the LSTM at
// the same shape (131k multiply-adds a step) 0.97x-0.99x far apart.
class CoreDistance {
 public:
  static constexpr int kFarNs = 160;
  // Whether the last measurement found the cores far apart and is recent.
  bool far_apart() const {
    return round_trip_ns_.load(std::memory_order_relaxed) >= kFarNs && !stale(now_ns());
  }
  // Whether a region of `threads` threads about to start should measure (claims the measurement).
  bool claim(int threads) {
    if (threads < 2 || threads > omp_get_num_procs()) return false;  // nobody to wait for
    const int64_t now = now_ns();
    int64_t last = last_ns_.load(std::memory_order_relaxed);
    return stale(now, last) &&
           last_ns_.compare_exchange_strong(last, now, std::memory_order_relaxed);
  }
  // Called by every thread of a region that claimed a measurement, first thing: threads 0 and 1
  // pass `ball` to and fro kTrips times; thread 0 keeps the fastest trip after the first.
  void measure(std::atomic<int>& ball) {
    const int me = omp_get_thread_num();
    if (omp_get_num_threads() < 2 || me > 1) return;
    if (me == 1) {
      for (int i = 0; i <= kTrips; ++i) {
        while (ball.load(std::memory_order_acquire) != 2 * i + 1) cpu_pause();
        ball.store(2 * i + 2, std::memory_order_release);
      }
      return;
    }
    int64_t best = -1;
    for (int i = 0; i <= kTrips; ++i) {
      const int64_t start = now_ns();
      ball.store(2 * i + 1, std::memory_order_release);
      while (ball.load(std::memory_order_acquire) != 2 * i + 2) cpu_pause();
      const int64_t trip = now_ns() - start;
      if (i > 0 && (best < 0 || trip < best)) best = trip;  // the first waits for thread 1 to start
    }
    round_trip_ns_.store(int(best), std::memory_order_relaxed);
  }
  // The last round trip measured in ns, 0 before the first.
  int round_trip_ns() const { return round_trip_ns_.load(std::memory_order_relaxed); }

 private:
  static constexpr int kTrips = 8;
  static constexpr int64_t kInterval = 20'000'000;  // ns
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  bool stale(int64_t now) const { return stale(now, last_ns_.load(std::memory_order_relaxed)); }
  static bool stale(int64_t now, int64_t last) { return now - last >= kInterval; }
  std::atomic<int> round_trip_ns_{0};
  std::atomic<int64_t> last_ns_{INT64_MIN / 2};
};
inline CoreDistance& core_distance() {
  static CoreDistance d;
  return d;
}

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
  const bool measure = core_distance().claim(threads);
  alignas(64) std::atomic<int> ball{0};
#pragma omp parallel num_threads(threads)
  {
    if (measure) core_distance().measure(ball);
    body();
  }
}

// f(j) for j in [0, n), split statically among `threads` threads (see run_threads).
template <typename F>
inline void parallel_for(Index n, int threads, F&& f) {
  run_threads(threads, [&] {
#pragma omp for schedule(static)
    for (Index j = 0; j < n; ++j) f(j);
  });
}

// How a thread waits for another one's signal: spinning for up to `spins` pauses, then sleeping
// on a condition variable. The signalling thread makes the awaited condition true with a seq_cst
// store or RMW, then calls wake(): it wakes the sleepers only when there are any (a waiter counts
// itself in before its last look at the condition, under the mutex that wake() takes too).
class SpinThenSleep {
 public:
  template <typename Ready>
  void wait(int spins, Ready&& ready) {
    for (int k = 0; k < spins; ++k) {
      if (ready()) return;
      cpu_pause();
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    {
      std::unique_lock<std::mutex> hold(mutex_);
      woken_.wait(hold, ready);
    }
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
  }
  void wake() {
    if (sleepers_.load(std::memory_order_seq_cst) == 0) return;
    { std::lock_guard<std::mutex> hold(mutex_); }  // a sleeper is in wait() or sees the condition
    woken_.notify_all();
  }

 private:
  alignas(64) std::atomic<int> sleepers_{0};
  std::mutex mutex_;
  std::condition_variable woken_;
};

// Pauses before sleeping: about 0.1 ms (as GOMP_SPINCOUNT in _core.py), or, with more threads
// than processors, about as few as libgomp's throttled spin count (100).
constexpr int kSpins = 4000, kThrottledSpins = 100;
inline int spins_for(int threads) {
  static const int procs = omp_get_num_procs();
  return threads <= procs ? kSpins : kThrottledSpins;
}

// The barrier that ends a time step, for the threads of the enclosing region (all of them call
// wait(); outside a region it does nothing). A waiting thread spins on a generation counter for
// up to kSpins pauses, then sleeps on a condition variable until the last thread arrives.
// OpenMP's barrier (libgomp) cost 240-300 ns per step on two threads against 45-60 ns for this
// spin (standalone, Zen 4). Sleeping bounds the cost when the threads outnumber the cores:
// spinning alone took 10x-17x the time of libgomp's barrier there. The kernels' per-step loops
// are `omp for nowait` followed by wait(): whatever a thread wrote before wait() is visible to all
// after it (each arrival is an acq_rel RMW of one counter; the last one releases the generation
// that the others acquire). Against libgomp's barrier, medians of 12 paired processes (Zen 4, 2
// threads): B = 1, T = 100, H = 128-256, LSTM and GRU forward and training 0.92x-0.96x the time;
// B = 4-16 1.00x-1.02x; 3-8 threads on the 2 cores (LSTM B = 4, T = 100, H = 256) 1.08x-1.16x.
class StepBarrier {
 public:
  void wait() {
    const int n = omp_get_num_threads();
    if (n <= 1) return;
    const unsigned g = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(g + 1, std::memory_order_seq_cst);
      waiting_.wake();
      return;
    }
    waiting_.wait(spins_for(n), [&] { return generation_.load(std::memory_order_seq_cst) != g; });
  }

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<unsigned> generation_{0};
  SpinThenSleep waiting_;
};

// A count of finished pieces of work that one thread of a region raises and another waits for
// (forward_scan's pipelined projection: chunks projected, chunks walked).
class Progress {
 public:
  void advance() {
    count_.fetch_add(1, std::memory_order_seq_cst);
    waiting_.wake();
  }
  // Returns once advance() has been called n times (what the callers did before is visible).
  void wait_for(Index n) {
    waiting_.wait(spins_for(2), [&] { return count_.load(std::memory_order_seq_cst) >= n; });
  }

 private:
  alignas(64) std::atomic<Index> count_{0};
  SpinThenSleep waiting_;
};

// Threads for packing a weight of `elements` (a copy: worth splitting only when large).
inline int packing_threads(Index elements) { return elements < (Index(1) << 18) ? 1 : max_threads(); }

// Threads for a region whose recurrent step costs `step_work` multiply-adds. With the cores far
// apart (CoreDistance), up to kFarParallelStepWork too runs on one thread; once the measurement is
// older than its interval, such a call runs on all threads again and measures anew.
inline int region_threads(double step_work) {
  if (step_work < kParallelStepWork) return 1;
  if (step_work < kFarParallelStepWork && core_distance().far_apart()) return 1;
  return max_threads();
}

// Threads for the GEMMs over all T*B rows of a call whose steps run on `step_threads` (the
// forward's input projection, seq.h's projection_plan; the backward's input and weight gradients
// after its walk): `gemm_work` multiply-adds, the narrowest `width` columns (I, or min(I, H)). All
// of them once the GEMMs are large and wide enough (kParallelGemmWork, kParallelGemmWidth),
// however small the steps, in a region of their own (which first wakes the idle workers).
// Training steps whose walk runs on one thread, against the backward's GEMMs on that thread too
// (Zen 4, 2 threads, in-process pairs): LSTM B = 1, I = H = 64, T = 1000 0.89x-0.90x the
// time, T = 100 0.93x, T = 50 0.94x-0.95x; H = 48, T = 100 0.97x; B = 2, H = 64, T = 1000 0.85x;
// H = 96, T = 1000 0.87x; GRU H = 64, T = 1000 0.93x. At H = 32 nothing gained (T = 200-1000
// 0.99x-1.05x), at I = 128, H = 32, T = 100 1.12x the time. Not while the cores are far apart
// (CoreDistance): the GEMMs' operands then cross between distant caches, and the one measurement
// of it, LSTM training at B = 1, T = 1000, H = 64, took 1.19x the time (6 pairs; 0.86x nearby).
constexpr double kParallelGemmWork = 2.0 * 1024.0 * 1024.0;
constexpr Index kParallelGemmWidth = 48;
inline int gemm_threads(int step_threads, double gemm_work, Index width) {
  const bool large = gemm_work >= kParallelGemmWork && width >= kParallelGemmWidth;
  return step_threads == 1 && large && !core_distance().far_apart() ? max_threads()
                                                                     : step_threads;
}

// The tiles of the steps of a short call (its weights read in place: each step streams every
// weight from cache), shared out as `omp for schedule(static)` shares them, but each claimed before
// it is worked on: a thread that has done its own share takes the unclaimed tiles of the others,
// last first. Each tile is done once per step, by one thread, with the same code: which thread
// does it changes no result. When one core runs slower for a while (the host's other work), a
// static split waits for it.
class TileClaims {
 public:
  explicit TileClaims(Index tiles) : n_(tiles), step_(new std::atomic<Index>[tiles]) {
    for (Index k = 0; k < n_; ++k) step_[k].store(-1, std::memory_order_relaxed);
  }
  // f(tile) for each tile claimed at step `step` (steps counted from 0, each greater than the
  // last); every thread of the region calls it.
  template <typename F>
  void run(Index step, F&& f) {
    const int nt = omp_get_num_threads(), me = omp_get_thread_num();
    auto lo = [&](int t) { return Index(t) * n_ / nt; };
    for (Index k = lo(me); k < lo(me + 1); ++k)
      if (claim(k, step)) f(k);
    for (int d = 1; d < nt; ++d) {
      const int other = (me + d) % nt;
      for (Index k = lo(other + 1) - 1; k >= lo(other); --k)
        if (claim(k, step)) f(k);
    }
  }

 private:
  bool claim(Index k, Index step) {
    Index seen = step_[k].load(std::memory_order_relaxed);
    while (seen < step)
      if (step_[k].compare_exchange_weak(seen, step, std::memory_order_relaxed)) return true;
    return false;
  }
  Index n_;
  std::unique_ptr<std::atomic<Index>[]> step_;
};

}  // namespace rnnfast
