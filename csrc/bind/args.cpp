#include "bind/args.h"

#include <cstdint>
#include <limits>
#include <sstream>

namespace rnnfast::bind {

std::string shape_str(const std::vector<Index>& shape) {
  std::ostringstream s;
  s << "(";
  for (size_t k = 0; k < shape.size(); ++k) s << (k ? ", " : "") << shape[k];
  s << (shape.size() == 1 ? ",)" : ")");
  return s.str();
}

std::string shape_of(const py::array& a) {
  return shape_str(std::vector<Index>(a.shape(), a.shape() + a.ndim()));
}

Index checked_numel(std::initializer_list<Index> dims, const char* what) {
  Index n = 1;
  for (Index d : dims) {
    if (d != 0 && n > std::numeric_limits<Index>::max() / d)
      throw py::value_error(std::string(what) + ": the requested size is too large");
    n *= d;
  }
  return n;
}

namespace {

// The kernels read arrays through typed pointers: they must be C-contiguous and aligned for their
// dtype (NumPy can make arrays that are neither, e.g. views into a byte buffer at an odd offset).
void check_layout(const py::array& a, const std::string& name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(name + ": expected a C-contiguous array");
  if (reinterpret_cast<std::uintptr_t>(a.data()) % static_cast<std::uintptr_t>(a.itemsize()) != 0)
    throw py::value_error(name + ": expected an array aligned for its dtype (got a misaligned view)");
}

std::string type_name(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__name__"));
}

bool is_float_kind(const py::array& a, bool& is_double) {
  if (a.dtype().equal(py::dtype::of<float>())) { is_double = false; return true; }
  if (a.dtype().equal(py::dtype::of<double>())) { is_double = true; return true; }
  return false;
}

}  // namespace

Args::Args(const py::handle& x, const char* name, int ndim, const char* dims_doc) {
  if (!py::isinstance<py::array>(x))
    throw py::type_error(std::string(name) + ": expected a numpy.ndarray of float32 or float64, got " +
                         type_name(x));
  first_ = py::reinterpret_borrow<py::array>(x);
  if (!is_float_kind(first_, is_double_))
    throw py::type_error(std::string(name) + ": expected dtype float32 or float64, got " +
                         std::string(py::str(first_.dtype())));
  if (first_.ndim() != ndim)
    throw py::value_error(std::string(name) + ": expected a " + std::to_string(ndim) + "-D array " +
                          dims_doc + ", got shape " + shape_of(first_));
  check_layout(first_, name);
  for (int d = 0; d < ndim; ++d)
    if (first_.shape(d) == 0)
      throw py::value_error(std::string(name) + ": expected non-empty dimensions " + dims_doc +
                            ", got shape " + shape_of(first_));
}

py::array Args::as_checked_array(const py::handle& obj, const char* name) const {
  const char* want = is_double_ ? "float64" : "float32";
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(name) + ": expected a numpy.ndarray of " + want + ", got " +
                         type_name(obj));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  bool d = false;
  if (!is_float_kind(a, d) || d != is_double_)
    throw py::type_error(std::string(name) + ": expected dtype " + want +
                         " (the dtype of the first input), got " + std::string(py::str(a.dtype())));
  check_layout(a, name);
  return a;
}

py::array Args::require(const py::handle& obj, const char* name,
                        const std::vector<Index>& shape) const {
  if (obj.is_none())
    throw py::type_error(std::string(name) + ": expected an array of shape " + shape_str(shape) +
                         ", got None");
  py::array a = as_checked_array(obj, name);
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t k = 0; ok && k < shape.size(); ++k) ok = a.shape(k) == shape[k];
  if (!ok)
    throw py::value_error(std::string(name) + ": expected shape " + shape_str(shape) + ", got " +
                          shape_of(a));
  return a;
}

py::array Args::optional(const py::handle& obj, const char* name,
                         const std::vector<Index>& shape) const {
  if (obj.is_none()) return absent();
  return require(obj, name, shape);
}

py::array Args::matrix(const py::handle& obj, const char* name) const {
  py::array a = as_checked_array(obj, name);
  if (a.ndim() != 2)
    throw py::value_error(std::string(name) + ": expected a 2-D array, got shape " + shape_of(a));
  return a;
}

py::array lengths_arg(const py::handle& obj, Index T, Index B) {
  if (obj.is_none()) return absent();
  if (!py::isinstance<py::array>(obj))
    throw py::type_error("lengths: expected a numpy.ndarray of int64, got " + type_name(obj));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().equal(py::dtype::of<int64_t>()))
    throw py::type_error("lengths: expected dtype int64, got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 1 || a.shape(0) != B)
    throw py::value_error("lengths: expected shape " + shape_str({B}) + ", got " + shape_of(a));
  check_layout(a, "lengths");
  const int64_t* p = static_cast<const int64_t*>(a.data());
  for (Index b = 0; b < B; ++b)
    if (p[b] < 1 || p[b] > T)
      throw py::value_error("lengths: expected values in [1, " + std::to_string(T) +
                            "], got lengths[" + std::to_string(b) + "] = " + std::to_string(p[b]));
  return a;
}

py::array cache_field(const Args& args, const py::handle& cache, const char* key,
                      const std::vector<Index>& shape) {
  if (!py::isinstance<py::dict>(cache))
    throw py::type_error("cache: expected the dict returned by a training forward, got " +
                         type_name(cache));
  py::dict d = py::reinterpret_borrow<py::dict>(cache);
  if (!d.contains(key))
    throw py::value_error(std::string("cache: missing field '") + key +
                          "' (was the forward run with training=True?)");
  const std::string name = std::string("cache['") + key + "']";
  return args.require(d[key], name.c_str(), shape);
}

}  // namespace rnnfast::bind

namespace rnnfast::bind {

Index hidden_from_w_ih(const Args& args, const py::handle& w_ih, Index G, Index I) {
  py::array w = args.matrix(w_ih, "w_ih");
  const Index rows = w.shape(0);
  if (rows == 0 || rows % G != 0 || w.shape(1) != I)
    throw py::value_error("w_ih: expected shape (" + std::to_string(G) + "*hidden_size, " +
                          std::to_string(I) + ") with hidden_size >= 1, got " + shape_of(w));
  return rows / G;
}

}  // namespace rnnfast::bind
