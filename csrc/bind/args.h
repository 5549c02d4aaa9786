// The binding tier's shared checks. Every argument from Python is validated here before any kernel
// runs: a wrong type or dtype raises TypeError, a wrong shape, a non-contiguous array or a bad
// length raises ValueError, and each message names the argument, what was expected and what came.
// _core converts nothing: the Python layer converts friendly inputs once, explicitly.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace rnnfast::bind {

namespace py = pybind11;

// A null array handle: "not given". (A default-constructed py::array is a real, empty array, one
// NumPy allocation each: the 13 array fields of an LSTM call, defaulted that way, made a step at
// B = 1, H = 16 cost 3.8-4.5 us instead of 1.9-3.0 us.)
template <typename A = py::array>
inline A absent() { return py::reinterpret_steal<A>(py::handle()); }
inline bool given(const py::array& a) { return a.ptr() != nullptr; }

std::string shape_str(const std::vector<Index>& shape);
std::string shape_of(const py::array& a);

// n1 * n2 * ..., or ValueError naming `what` when the product does not fit an index.
Index checked_numel(std::initializer_list<Index> dims, const char* what);

// Validates the arguments of one kernel call against the dtype of its first array.
class Args {
 public:
  // `x` fixes the dtype (float32 or float64) and must have `ndim` dimensions.
  Args(const py::handle& x, const char* name, int ndim, const char* dims_doc);

  bool is_double() const { return is_double_; }
  const py::array& first() const { return first_; }

  // An ndarray of the call's dtype, C-contiguous, of exactly this shape.
  py::array require(const py::handle& obj, const char* name, const std::vector<Index>& shape) const;
  // As require, or absent() for None.
  py::array optional(const py::handle& obj, const char* name,
                     const std::vector<Index>& shape) const;
  // A 2-D array of the call's dtype; returns it so the caller can read its shape.
  py::array matrix(const py::handle& obj, const char* name) const;

  // The data of an array, or null for an absent one (see absent()).
  template <typename T>
  static const T* ptr(const py::array& a) {
    return a.ptr() != nullptr ? static_cast<const T*>(a.data()) : nullptr;
  }

 private:
  py::array as_checked_array(const py::handle& obj, const char* name) const;
  py::array first_ = absent();
  bool is_double_ = false;
};

// lengths: None, or an int64 array (B,) with 1 <= lengths[b] <= T.
py::array lengths_arg(const py::handle& obj, Index T, Index B);
inline const int64_t* lengths_ptr(const py::array& a) {
  return given(a) ? static_cast<const int64_t*>(a.data()) : nullptr;
}

// A new uninitialised C-contiguous array of the call's dtype.
template <typename T>
py::array_t<T> empty(const std::vector<Index>& shape) {
  return py::array_t<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}
template <typename T>
T* mut(py::array_t<T>& a) {
  return a.mutable_data();
}

// The gradients every cell's backward returns, allocated for w_ih (G*H, I), w_hh (G*H, P).
template <typename T>
struct CoreGrads {
  py::array_t<T> dx, dh0, dw_ih, dw_hh, db_ih, db_hh;
  CoreGrads(Index T_, Index B, Index I, Index GH, Index P)
      : dx(empty<T>({T_, B, I})), dh0(empty<T>({B, P})), dw_ih(empty<T>({GH, I})),
        dw_hh(empty<T>({GH, P})), db_ih(empty<T>({GH})), db_hh(empty<T>({GH})) {}
  Grads<T> pointers() {
    return {mut(dx), mut(dh0), mut(dw_ih), mut(dw_hh), mut(db_ih), mut(db_hh)};
  }
  py::dict to_dict() const {
    py::dict d;
    d["dx"] = dx;
    d["dh0"] = dh0;
    d["dw_ih"] = dw_ih;
    d["dw_hh"] = dw_hh;
    d["db_ih"] = db_ih;
    d["db_hh"] = db_hh;
    return d;
  }
};

// The cache of a training forward, read back in the backward: every field checked.
py::array cache_field(const Args& args, const py::handle& cache, const char* key,
                      const std::vector<Index>& shape);

}  // namespace rnnfast::bind

namespace rnnfast::bind {

// The hidden size from w_ih (G*H, I): checks that w_ih is 2-D with a positive multiple of G rows
// and I columns.
Index hidden_from_w_ih(const Args& args, const py::handle& w_ih, Index G, Index I);

}  // namespace rnnfast::bind
