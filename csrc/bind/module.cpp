// A compiled module rnnfast._core_<isa> (see CMakeLists.txt; rnnfast._core picks one): kernels (one file per cell in bind/), threads and build facts.
#include <pybind11/pybind11.h>

#include <string>

#include "parallel.h"
#include "peak.h"

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
  m.def(
      "fma_peak_gflops",
      [](int threads, double seconds) {
        if (threads < 0 || threads > rnnfast::thread_limit())
          throw py::value_error("threads: expected 0 (the count of set_num_threads) or a thread "
                                "count in [1, " + std::to_string(rnnfast::thread_limit()) +
                                "], got " + std::to_string(threads));
        if (!(seconds > 0 && seconds <= 10))
          throw py::value_error("seconds: expected a duration in (0, 10], got " +
                                std::to_string(seconds));
        py::gil_scoped_release release;
        return rnnfast::fma_peak_gflops(threads == 0 ? rnnfast::max_threads() : threads, seconds);
      },
      py::arg("threads") = 0, py::arg("seconds") = 0.01,
      "The float multiply-add ceiling of this build's kernels, in GFLOP/s: one region of "
      "`threads` threads (0: the count of set_num_threads), each about `seconds` of independent "
      "multiply-adds in registers with the GEMM's vectors (csrc/peak.h). The host's other work "
      "only lowers it: take the best of several calls.");
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
