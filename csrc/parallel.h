// Where rnnfast decides about threads. One OpenMP parallel region per kernel call owns them; its
// size comes from region_threads(), which runs small problems on one thread (a barrier per step
// costs more than it saves there). Results never depend on the choice (see common.h).
#pragma once

#include <omp.h>

#include "common.h"

namespace rnnfast {

// Below this many multiply-adds per recurrent step, a second thread does not pay for its barriers.
constexpr double kParallelStepWork = 96.0 * 1024.0;

inline int max_threads() { return omp_get_max_threads(); }
inline void set_max_threads(int n) { omp_set_num_threads(n); }

// Threads for a region whose recurrent step costs `step_work` multiply-adds.
inline int region_threads(double step_work) {
  return step_work < kParallelStepWork ? 1 : max_threads();
}

}  // namespace rnnfast
