// Python binding of the GRU kernels: validate, allocate, release the GIL, call, return.
#include "bind/args.h"
#include "gru.h"

namespace rnnfast::bind {
namespace {

constexpr Index G = gru_gate::count;

struct GruCall {
  Args args;
  py::array x = absent(), h0 = absent(), w_ih = absent(), w_hh = absent(), b_ih = absent(),
            b_hh = absent(), lengths = absent();
  GruShape shape{};

  template <typename T>
  GruWeights<T> weights() const {
    return {Args::ptr<T>(w_ih), Args::ptr<T>(w_hh), Args::ptr<T>(b_ih), Args::ptr<T>(b_hh)};
  }
};

GruCall parse(const py::handle& x, const py::handle& h0, const py::handle& w_ih,
              const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
              bool linear_before_reset, bool reverse, const py::handle& lengths) {
  GruCall c{Args(x, "x", 3, "(T, B, I)")};
  c.x = c.args.first();
  const Index T = c.x.shape(0), B = c.x.shape(1), I = c.x.shape(2);
  const Index H = hidden_from_w_ih(c.args, w_ih, G, I);
  checked_numel({T, B, G, H}, "x");
  c.w_ih = c.args.require(w_ih, "w_ih", {G * H, I});
  c.w_hh = c.args.require(w_hh, "w_hh", {G * H, H});
  c.b_ih = c.args.optional(b_ih, "b_ih", {G * H});
  c.b_hh = c.args.optional(b_hh, "b_hh", {G * H});
  c.h0 = c.args.require(h0, "h0", {B, H});
  c.lengths = lengths_arg(lengths, T, B);
  c.shape = {T, B, I, H, linear_before_reset, reverse, lengths_ptr(c.lengths)};
  return c;
}

template <typename T>
py::tuple forward(const GruCall& c, bool training) {
  const GruShape& s = c.shape;
  auto y = empty<T>({s.T, s.B, s.H});
  auto h_n = empty<T>({s.B, s.H});
  auto gates = absent<py::array_t<T>>(), hs = absent<py::array_t<T>>(),
       hn = absent<py::array_t<T>>();
  GruCache<T> cache{nullptr, nullptr, nullptr};
  if (training) {
    gates = empty<T>({s.T, s.B, G * s.H});
    hs = s.lengths != nullptr ? empty<T>({s.T, s.B, s.H}) : y;  // without lengths, y is h
    if (s.linear_before_reset) hn = empty<T>({s.T, s.B, s.H});
    cache = {mut(gates), mut(hs), s.linear_before_reset ? mut(hn) : nullptr};
  }
  const GruWeights<T> w = c.weights<T>();
  {
    py::gil_scoped_release nogil;
    gru_forward<T>(mut(y), mut(h_n), cache, Args::ptr<T>(c.x), Args::ptr<T>(c.h0), w, s);
  }
  py::object saved = py::none();
  if (training) {
    py::dict d;
    d["gates"] = gates;
    d["h"] = hs;
    if (s.linear_before_reset) d["hn"] = hn;
    saved = d;
  }
  return py::make_tuple(y, h_n, saved);
}

template <typename T>
py::dict backward(const GruCall& c, const py::handle& dy, const py::handle& dh_n,
                  const py::handle& cache) {
  const GruShape& s = c.shape;
  const Args& a = c.args;
  py::array dy_a = a.optional(dy, "dy", {s.T, s.B, s.H});
  py::array dhn_a = a.optional(dh_n, "dh_n", {s.B, s.H});
  py::array gates = cache_field(a, cache, "gates", {s.T, s.B, G * s.H});
  py::array hs = cache_field(a, cache, "h", {s.T, s.B, s.H});
  py::array hn = absent();
  if (s.linear_before_reset) hn = cache_field(a, cache, "hn", {s.T, s.B, s.H});

  CoreGrads<T> r(s.T, s.B, s.I, G * s.H, s.H);
  const GruGrads<T> g = r.pointers();
  // The backward only reads the cache; the kernel's struct is non-const for the forward's sake.
  const GruCache<T> saved{const_cast<T*>(Args::ptr<T>(gates)), const_cast<T*>(Args::ptr<T>(hs)),
                          const_cast<T*>(Args::ptr<T>(hn))};
  const GruWeights<T> w = c.weights<T>();
  {
    py::gil_scoped_release nogil;
    gru_backward<T>(g, Args::ptr<T>(dy_a), Args::ptr<T>(dhn_a), Args::ptr<T>(c.x),
                    Args::ptr<T>(c.h0), w, saved, s);
  }
  return r.to_dict();
}

}  // namespace

void bind_gru(py::module_& m) {
  m.def(
      "gru_forward",
      [](py::object x, py::object h0, py::object w_ih, py::object w_hh, py::object b_ih,
         py::object b_hh, bool linear_before_reset, bool reverse, py::object lengths,
         bool training) {
        GruCall c = parse(x, h0, w_ih, w_hh, b_ih, b_hh, linear_before_reset, reverse, lengths);
        return c.args.is_double() ? forward<double>(c, training) : forward<float>(c, training);
      },
      py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"),
      py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
      py::arg("linear_before_reset") = true, py::arg("reverse") = false,
      py::arg("lengths") = py::none(), py::arg("training") = false,
      "GRU over a whole sequence: returns (y, h_n, cache). See rnnfast.reference.gru_forward.\n"
      "Without lengths, cache['h'] is y itself (no copy): do not modify y in place before the backward.");
  m.def(
      "gru_backward",
      [](py::object dy, py::object dh_n, py::object x, py::object h0, py::object w_ih,
         py::object w_hh, py::object cache, bool linear_before_reset, bool reverse,
         py::object lengths) {
        GruCall c = parse(x, h0, w_ih, w_hh, py::none(), py::none(), linear_before_reset, reverse,
                          lengths);
        return c.args.is_double() ? backward<double>(c, dy, dh_n, cache)
                                  : backward<float>(c, dy, dh_n, cache);
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("x"), py::arg("h0"), py::arg("w_ih"),
      py::arg("w_hh"), py::arg("cache"), py::kw_only(), py::arg("linear_before_reset") = true,
      py::arg("reverse") = false, py::arg("lengths") = py::none(),
      "GRU backward: returns a dict of gradients. See rnnfast.reference.gru_backward.");
}

}  // namespace rnnfast::bind
