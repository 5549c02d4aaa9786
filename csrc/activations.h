// Sigmoid and tanh over short arrays, computed so that every element goes through the same
// instructions wherever it sits in memory. (Eigen's own array functions peel unaligned heads into a
// scalar path whose results differ from the vector path in the last bit, which would make results
// depend on buffer alignment.) float: Eigen's vectorised functions on whole packets, the tail
// through a padded packet. double: the C library, element by element, for full accuracy.
#pragma once

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
