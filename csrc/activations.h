// Sigmoid and tanh over short arrays, computed so that every element goes through the same
// instructions wherever it sits in memory. (Eigen's own array functions peel unaligned heads into a
// scalar path whose results differ from the vector path in the last bit, which would make results
// depend on buffer alignment.) float: Eigen's vectorised functions on whole packets, the tail
// through a padded packet. double: the C library, element by element, for full accuracy.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>

#include "common.h"

namespace rnnfast {
namespace detail {

template <typename Op>
inline void map_packets(float* dst, const float* src, Index n, Op op) {
  using Packet = Eigen::internal::packet_traits<float>::type;
  constexpr Index W = Eigen::internal::unpacket_traits<Packet>::size;
  Index i = 0;
  for (; i + W <= n; i += W)
    Eigen::internal::pstoreu(dst + i, op.packetOp(Eigen::internal::ploadu<Packet>(src + i)));
  if (i < n) {
    alignas(64) float buf[W] = {};
    for (Index k = i; k < n; ++k) buf[k - i] = src[k];
    Eigen::internal::pstore(buf, op.packetOp(Eigen::internal::pload<Packet>(buf)));
    for (Index k = i; k < n; ++k) dst[k] = buf[k - i];
  }
}

}  // namespace detail

// Eigen's float logistic, made exactly 0 below -88.38 (where exp(-x) overflows float): its clamped
// exponential would give a denormal there, and then saturated gates would not have a zero slope.
struct ExactLogistic {
  template <typename Packet>
  Packet packetOp(const Packet& x) const {
    using namespace Eigen::internal;
    const Packet y = scalar_logistic_op<float>().packetOp(x);
    return pselect(pcmp_lt(x, pset1<Packet>(-88.3762626647949f)), pzero(x), y);
  }
};

// One packet of the float activations above, for fused gate passes that keep a packet of every
// operand in registers (the same instructions as sigmoid_to / tanh_to).
using FloatPacket = Eigen::internal::packet_traits<float>::type;
constexpr Index kFloatPacket = Eigen::internal::unpacket_traits<FloatPacket>::size;
inline FloatPacket sigmoid_packet(const FloatPacket& x) { return ExactLogistic().packetOp(x); }
inline FloatPacket tanh_packet(const FloatPacket& x) {
  return Eigen::internal::scalar_tanh_op<float>().packetOp(x);
}

// An operand of a fused float pass over the units [lo, hi) of a tile: `rows` rows (gates) of units,
// unit u of row g at p[g * stride + u] (p already offset to the first unit); p null when absent.
// Outputs (out) are written back by the pass; inputs are only read (p is const_cast for inputs).
struct Lanes {
  float* p;
  Index stride;
  int rows;
  bool out;
};
inline Lanes in_lanes(const float* p, Index stride = 0, int rows = 1) {
  return {const_cast<float*>(p), stride, rows, false};
}
inline Lanes out_lanes(float* p, Index stride = 0, int rows = 1) { return {p, stride, rows, true}; }

// A fused pass over n units: body(ops, u) computes units [u, u + kFloatPacket) from the operands
// `ops`, a packet of each in registers. Full packets run in place; a tail of n % kFloatPacket units
// runs through the same body on zero-padded copies of every operand (so every unit goes through
// the same instructions wherever it sits), the outputs then copied back.
constexpr int kMaxLaneRows = 4;
template <size_t N, typename Body>
inline void fused_pass(Index n, const std::array<Lanes, N>& ops, Body&& body) {
  constexpr Index W = kFloatPacket;
  Index u = 0;
  for (; u + W <= n; u += W) body(ops, u);
  if (u == n) return;
  const Index k = n - u;
  alignas(64) float pad[N][kMaxLaneRows * W];
  std::array<Lanes, N> local;
  for (size_t q = 0; q < N; ++q) {
    local[q] = {ops[q].p != nullptr ? pad[q] : nullptr, W, ops[q].rows, ops[q].out};
    if (ops[q].p == nullptr) continue;
    std::fill_n(pad[q], ops[q].rows * W, 0.0f);
    for (int g = 0; g < ops[q].rows; ++g)
      std::copy_n(ops[q].p + g * ops[q].stride + u, k, pad[q] + g * W);
  }
  body(local, Index(0));
  for (size_t q = 0; q < N; ++q)
    if (ops[q].p != nullptr && ops[q].out)
      for (int g = 0; g < ops[q].rows; ++g)
        std::copy_n(pad[q] + g * W, k, ops[q].p + g * ops[q].stride + u);
}

// Packet access to a Lanes operand: row g, units [u, u + kFloatPacket).
inline FloatPacket lanes_load(const Lanes& l, Index g, Index u) {
  return Eigen::internal::ploadu<FloatPacket>(l.p + g * l.stride + u);
}
inline void lanes_store(const Lanes& l, Index g, Index u, const FloatPacket& v) {
  Eigen::internal::pstoreu(l.p + g * l.stride + u, v);
}

// dst[k] = sigmoid(src[k]); dst may be src.
inline void sigmoid_to(float* dst, const float* src, Index n) {
  detail::map_packets(dst, src, n, ExactLogistic());
}
inline void sigmoid_to(double* dst, const double* src, Index n) {
  for (Index k = 0; k < n; ++k) dst[k] = 1.0 / (1.0 + std::exp(-src[k]));
}

// dst[k] = tanh(src[k]); dst may be src.
inline void tanh_to(float* dst, const float* src, Index n) {
  detail::map_packets(dst, src, n, Eigen::internal::scalar_tanh_op<float>());
}
inline void tanh_to(double* dst, const double* src, Index n) {
  for (Index k = 0; k < n; ++k) dst[k] = std::tanh(src[k]);
}

template <typename T>
inline void sigmoid_inplace(T* x, Index n) { sigmoid_to(x, x, n); }
template <typename T>
inline void tanh_inplace(T* x, Index n) { tanh_to(x, x, n); }

}  // namespace rnnfast
