// Python binding of the vanilla RNN kernels: validate, allocate, release the GIL, call, return.
#include "bind/args.h"
#include "rnn.h"

namespace rnnfast::bind {
namespace {

struct RnnCall {
  Args args;
  py::array x = absent(), h0 = absent(), w_ih = absent(), w_hh = absent(), b_ih = absent(),
            b_hh = absent(), lengths = absent();
  RnnShape shape{};

  template <typename T>
  RnnWeights<T> weights() const {
    return {Args::ptr<T>(w_ih), Args::ptr<T>(w_hh), Args::ptr<T>(b_ih), Args::ptr<T>(b_hh)};
  }
};

Nonlinearity parse_nonlinearity(const std::string& name) {
  if (name == "tanh") return Nonlinearity::Tanh;
  if (name == "relu") return Nonlinearity::Relu;
  throw py::value_error("nonlinearity: expected 'tanh' or 'relu', got '" + name + "'");
}

RnnCall parse(const py::handle& x, const py::handle& h0, const py::handle& w_ih,
              const py::handle& w_hh, const py::handle& b_ih, const py::handle& b_hh,
              const std::string& nonlinearity, bool reverse, const py::handle& lengths) {
  const Nonlinearity act = parse_nonlinearity(nonlinearity);
  RnnCall c{Args(x, "x", 3, "(T, B, I)")};
  c.x = c.args.first();
  const Index T = c.x.shape(0), B = c.x.shape(1), I = c.x.shape(2);
  const Index H = hidden_from_w_ih(c.args, w_ih, 1, I);
  checked_numel({T, B, H}, "x");
  c.w_ih = c.args.require(w_ih, "w_ih", {H, I});
  c.w_hh = c.args.require(w_hh, "w_hh", {H, H});
  c.b_ih = c.args.optional(b_ih, "b_ih", {H});
  c.b_hh = c.args.optional(b_hh, "b_hh", {H});
  c.h0 = c.args.require(h0, "h0", {B, H});
  c.lengths = lengths_arg(lengths, T, B);
  c.shape = {T, B, I, H, act, reverse, lengths_ptr(c.lengths)};
  return c;
}

template <typename T>
py::tuple forward(const RnnCall& c, bool training) {
  const RnnShape& s = c.shape;
  auto y = empty<T>({s.T, s.B, s.H});
  auto h_n = empty<T>({s.B, s.H});
  auto hs = absent<py::array_t<T>>();
  RnnCache<T> cache{nullptr};
  if (training) {
    hs = s.lengths != nullptr ? empty<T>({s.T, s.B, s.H}) : y;  // without lengths, y is h
    cache = {mut(hs)};
  }
  const RnnWeights<T> w = c.weights<T>();
  {
    py::gil_scoped_release nogil;
    rnn_forward<T>(mut(y), mut(h_n), cache, Args::ptr<T>(c.x), Args::ptr<T>(c.h0), w, s);
  }
  py::object saved = py::none();
  if (training) {
    py::dict d;
    d["h"] = hs;
    saved = d;
  }
  return py::make_tuple(y, h_n, saved);
}

template <typename T>
py::dict backward(const RnnCall& c, const py::handle& dy, const py::handle& dh_n,
                  const py::handle& cache) {
  const RnnShape& s = c.shape;
  const Args& a = c.args;
  py::array dy_a = a.optional(dy, "dy", {s.T, s.B, s.H});
  py::array dhn_a = a.optional(dh_n, "dh_n", {s.B, s.H});
  py::array hs = cache_field(a, cache, "h", {s.T, s.B, s.H});

  CoreGrads<T> r(s.T, s.B, s.I, s.H, s.H);
  const RnnGrads<T> g = r.pointers();
  // The backward only reads the cache; the kernel's struct is non-const for the forward's sake.
  const RnnCache<T> saved{const_cast<T*>(Args::ptr<T>(hs))};
  const RnnWeights<T> w = c.weights<T>();
  {
    py::gil_scoped_release nogil;
    rnn_backward<T>(g, Args::ptr<T>(dy_a), Args::ptr<T>(dhn_a), Args::ptr<T>(c.x),
                    Args::ptr<T>(c.h0), w, saved, s);
  }
  return r.to_dict();
}

}  // namespace

void bind_rnn(py::module_& m) {
  m.def(
      "rnn_forward",
      [](py::object x, py::object h0, py::object w_ih, py::object w_hh, py::object b_ih,
         py::object b_hh, const std::string& nonlinearity, bool reverse, py::object lengths,
         bool training) {
        RnnCall c = parse(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity, reverse, lengths);
        return c.args.is_double() ? forward<double>(c, training) : forward<float>(c, training);
      },
      py::arg("x"), py::arg("h0"), py::arg("w_ih"), py::arg("w_hh"),
      py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
      py::arg("nonlinearity") = "tanh", py::arg("reverse") = false,
      py::arg("lengths") = py::none(), py::arg("training") = false,
      "Vanilla RNN over a whole sequence: returns (y, h_n, cache). See rnnfast.reference.rnn_forward.\n"
      "Without lengths, cache['h'] is y itself (no copy): do not modify y in place before the backward.");
  m.def(
      "rnn_backward",
      [](py::object dy, py::object dh_n, py::object x, py::object h0, py::object w_ih,
         py::object w_hh, py::object cache, const std::string& nonlinearity, bool reverse,
         py::object lengths) {
        RnnCall c = parse(x, h0, w_ih, w_hh, py::none(), py::none(), nonlinearity, reverse,
                          lengths);
        return c.args.is_double() ? backward<double>(c, dy, dh_n, cache)
                                  : backward<float>(c, dy, dh_n, cache);
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("x"), py::arg("h0"), py::arg("w_ih"),
      py::arg("w_hh"), py::arg("cache"), py::kw_only(), py::arg("nonlinearity") = "tanh",
      py::arg("reverse") = false, py::arg("lengths") = py::none(),
      "Vanilla RNN backward: returns a dict of gradients. See rnnfast.reference.rnn_backward.");
}

}  // namespace rnnfast::bind
