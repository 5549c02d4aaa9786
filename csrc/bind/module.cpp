// A compiled module rnnfast._core_<isa> (see CMakeLists.txt; rnnfast._core picks one): kernels (one file per cell in bind/), threads and build facts.
#include <pybind11/pybind11.h>

#include <string>

#include "parallel.h"

namespace py = pybind11;

namespace rnnfast::bind {
void bind_lstm(py::module_& m);
void bind_gru(py::module_& m);
void bind_rnn(py::module_& m);
}  // namespace rnnfast::bind

namespace {

std::string simd_level() {
#if defined(__AVX512F__)
  return "AVX512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "AVX2+FMA";
#elif defined(__AVX__)
  return "AVX";
#elif defined(__SSE4_2__)
  return "SSE4.2";
#else
  return "SSE2";
#endif
}

}  // namespace

PYBIND11_MODULE(RNNFAST_MODULE, m) {
  m.doc() = "rnnfast compiled kernels (C++/Eigen/OpenMP). Use the rnnfast package, not this module.";
  rnnfast::bind::bind_lstm(m);
  rnnfast::bind::bind_gru(m);
  rnnfast::bind::bind_rnn(m);

  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1 || n > rnnfast::thread_limit())
          throw py::value_error("n: expected a thread count in [1, " +
                                std::to_string(rnnfast::thread_limit()) + "] (4x the processors), got " +
                                std::to_string(n));
        rnnfast::set_max_threads(n);
      },
      py::arg("n"), "Set the number of threads the kernels use.");
  m.def("get_num_threads", &rnnfast::max_threads, "The number of threads the kernels use.");
  m.def(
      "set_local_threads",
      [](int n) {
        if (n < 0 || n > rnnfast::thread_limit())
          throw py::value_error("n: expected 0 (none) or a thread count in [1, " +
                                std::to_string(rnnfast::thread_limit()) + "], got " +
                                std::to_string(n));
        const int previous = rnnfast::local_thread_setting();
        rnnfast::local_thread_setting() = n;
        return previous;
      },
      py::arg("n"),
      "Set the threads of the kernel calls made from the calling thread only (0: the count of "
      "set_num_threads); returns the previous setting.");
  m.def("core_round_trip_ns", []() { return rnnfast::core_distance().round_trip_ns(); },
        "The round trip of a cache line between the cores of the last measured region's first two "
        "threads, in ns (0: not measured yet); the kernels run small steps on one thread when it "
        "is long.");
  m.def("build_info", []() {
    py::dict d;
    d["version"] = RNNFAST_VERSION;
    d["compiler"] = RNNFAST_COMPILER;
    d["flags"] = RNNFAST_FLAGS;
    d["arch"] = RNNFAST_ARCH;
    d["module"] = PYBIND11_TOSTRING(RNNFAST_MODULE);
    d["simd"] = simd_level();
    d["eigen"] = RNNFAST_EIGEN_VERSION;
    d["eigen_simd"] = Eigen::SimdInstructionSetsInUse();
    d["openmp"] = std::to_string(_OPENMP);
    return d;
  });
}
