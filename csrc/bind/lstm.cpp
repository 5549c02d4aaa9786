// Python binding of the LSTM kernels: validate, allocate, release the GIL, call, return.
#include "bind/args.h"
#include "lstm.h"

namespace rnnfast::bind {
namespace {

constexpr Index G = lstm_gate::count;

// The validated arrays and sizes of one LSTM call.
struct LstmCall {
  Args args;
  py::array x = absent(), h0 = absent(), c0 = absent(), w_ih = absent(), w_hh = absent(),
            b_ih = absent(), b_hh = absent(), w_hr = absent(), w_peep = absent(),
            lengths = absent();
  LstmShape shape{};

  template <typename T>
  LstmWeights<T> weights() const {
    return {{Args::ptr<T>(w_ih), Args::ptr<T>(w_hh), Args::ptr<T>(b_ih), Args::ptr<T>(b_hh)},
            Args::ptr<T>(w_hr),
            Args::ptr<T>(w_peep)};
  }
};

LstmCall parse(const py::handle& x, const py::handle& h0, const py::handle& c0,
               const py::handle& w_ih, const py::handle& w_hh, const py::handle& b_ih,
               const py::handle& b_hh, const py::handle& w_hr, const py::handle& w_peep,
               bool coupled, bool reverse, const py::handle& lengths) {
  LstmCall c{Args(x, "x", 3, "(T, B, I)")};
  c.x = c.args.first();
  const Index T = c.x.shape(0), B = c.x.shape(1), I = c.x.shape(2);
  const Index H = hidden_from_w_ih(c.args, w_ih, G, I);
  Index P = H;
  if (!w_hr.is_none()) {
    P = c.args.matrix(w_hr, "w_hr").shape(0);
    if (P == 0) throw py::value_error("w_hr: expected shape (proj_size, " + std::to_string(H) +
                                      ") with proj_size >= 1, got (0, ...)");
  }
  checked_numel({T, B, G, H}, "x");
  c.w_ih = c.args.require(w_ih, "w_ih", {G * H, I});
  c.w_hh = c.args.require(w_hh, "w_hh", {G * H, P});
  c.b_ih = c.args.optional(b_ih, "b_ih", {G * H});
  c.b_hh = c.args.optional(b_hh, "b_hh", {G * H});
  c.w_hr = c.args.optional(w_hr, "w_hr", {P, H});
  c.w_peep = c.args.optional(w_peep, "w_peep", {3, H});
  c.h0 = c.args.require(h0, "h0", {B, P});
  c.c0 = c.args.require(c0, "c0", {B, H});
  c.lengths = lengths_arg(lengths, T, B);
  c.shape = {T, B, I, H, P, coupled, reverse, lengths_ptr(c.lengths)};
  return c;
}

template <typename T>
py::tuple forward(const LstmCall& c, bool training) {
  const LstmShape& s = c.shape;
  auto y = empty<T>({s.T, s.B, s.P});
  auto h_n = empty<T>({s.B, s.P});
  auto c_n = empty<T>({s.B, s.H});
  auto gates = absent<py::array_t<T>>(), cs = absent<py::array_t<T>>(),
       hs = absent<py::array_t<T>>();
  LstmCache<T> cache{nullptr, nullptr, nullptr};
  if (training) {
    gates = empty<T>({s.T, s.B, G * s.H});
    cs = empty<T>({s.T, s.B, s.H});
    hs = s.lengths != nullptr ? empty<T>({s.T, s.B, s.P}) : y;  // without lengths, y is h
    cache = {mut(gates), mut(cs), mut(hs)};
  }
  const LstmWeights<T> w = c.weights<T>();
  {
    py::gil_scoped_release nogil;
    lstm_forward<T>(mut(y), mut(h_n), mut(c_n), cache, Args::ptr<T>(c.x), Args::ptr<T>(c.h0),
                    Args::ptr<T>(c.c0), w, s);
  }
  py::object saved = py::none();
  if (training) {
    py::dict d;
    d["gates"] = gates;
    d["c"] = cs;
    d["h"] = hs;
    saved = d;
  }
  return py::make_tuple(y, h_n, c_n, saved);
}

template <typename T>
py::dict backward(const LstmCall& c, const py::handle& dy, const py::handle& dh_n,
                  const py::handle& dc_n, const py::handle& cache) {
  const LstmShape& s = c.shape;
  const Args& a = c.args;
  py::array dy_a = a.optional(dy, "dy", {s.T, s.B, s.P});
  py::array dhn_a = a.optional(dh_n, "dh_n", {s.B, s.P});
  py::array dcn_a = a.optional(dc_n, "dc_n", {s.B, s.H});
  py::array gates = cache_field(a, cache, "gates", {s.T, s.B, G * s.H});
  py::array cs = cache_field(a, cache, "c", {s.T, s.B, s.H});
  py::array hs = cache_field(a, cache, "h", {s.T, s.B, s.P});

  CoreGrads<T> r(s.T, s.B, s.I, G * s.H, s.P);
  auto dc0 = empty<T>({s.B, s.H});
  auto dw_hr = absent<py::array_t<T>>(), dw_peep = absent<py::array_t<T>>();
  if (given(c.w_hr)) dw_hr = empty<T>({s.P, s.H});
  if (given(c.w_peep)) dw_peep = empty<T>({3, s.H});
  const LstmGrads<T> g{r.pointers(), mut(dc0), given(c.w_hr) ? mut(dw_hr) : nullptr,
                       given(c.w_peep) ? mut(dw_peep) : nullptr};
  // The backward only reads the cache; the kernel's struct is non-const for the forward's sake.
  const LstmCache<T> saved{const_cast<T*>(Args::ptr<T>(gates)), const_cast<T*>(Args::ptr<T>(cs)),
                           const_cast<T*>(Args::ptr<T>(hs))};
  const LstmWeights<T> w = c.weights<T>();
  {
    py::gil_scoped_release nogil;
    lstm_backward<T>(g, Args::ptr<T>(dy_a), Args::ptr<T>(dhn_a), Args::ptr<T>(dcn_a),
                     Args::ptr<T>(c.x), Args::ptr<T>(c.h0), Args::ptr<T>(c.c0), w, saved, s);
  }
  py::dict out = r.to_dict();
  out["dc0"] = dc0;
  if (given(c.w_hr)) out["dw_hr"] = dw_hr;
  if (given(c.w_peep)) out["dw_peep"] = dw_peep;
  return out;
}

}  // namespace

void bind_lstm(py::module_& m) {
  m.def(
      "lstm_forward",
      [](py::object x, py::object h0, py::object c0, py::object w_ih, py::object w_hh,
         py::object b_ih, py::object b_hh, py::object w_hr, py::object w_peep, bool coupled,
         bool reverse, py::object lengths, bool training) {
        LstmCall c = parse(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, w_peep, coupled, reverse,
                           lengths);
        return c.args.is_double() ? forward<double>(c, training) : forward<float>(c, training);
      },
      py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"),
      py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
      py::arg("w_hr") = py::none(), py::arg("w_peep") = py::none(), py::arg("coupled") = false,
      py::arg("reverse") = false, py::arg("lengths") = py::none(), py::arg("training") = false,
      "LSTM over a whole sequence: returns (y, h_n, c_n, cache). See rnnfast.reference.lstm_forward.\n"
      "Without lengths, cache['h'] is y itself (no copy): do not modify y in place before the backward.");
  m.def(
      "lstm_backward",
      [](py::object dy, py::object dh_n, py::object dc_n, py::object x, py::object h0,
         py::object c0, py::object w_ih, py::object w_hh, py::object cache, py::object w_hr,
         py::object w_peep, bool coupled, bool reverse, py::object lengths) {
        LstmCall c = parse(x, h0, c0, w_ih, w_hh, py::none(), py::none(), w_hr, w_peep, coupled,
                           reverse, lengths);
        return c.args.is_double() ? backward<double>(c, dy, dh_n, dc_n, cache)
                                  : backward<float>(c, dy, dh_n, dc_n, cache);
      },
      py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"), py::arg("x"), py::arg("h0"),
      py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("cache"), py::kw_only(),
      py::arg("w_hr") = py::none(), py::arg("w_peep") = py::none(), py::arg("coupled") = false,
      py::arg("reverse") = false, py::arg("lengths") = py::none(),
      "LSTM backward: returns a dict of gradients. See rnnfast.reference.lstm_backward.");
}

}  // namespace rnnfast::bind
