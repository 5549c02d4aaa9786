// GRU over a whole sequence, one layer, one direction, both variants of the candidate state.
// Conventions (sizes, layouts, nullable pointers, time order): common.h.
//
//   xr, xz, xn = x_t w_ih^T + b_ih          hr, hz, hn = h_{t-1} w_hh^T + b_hh
//   r = sigmoid(xr + hr)                    z = sigmoid(xz + hz)
//   linear_before_reset (PyTorch):          n = tanh(xn + r * hn)
//   otherwise (Cho et al. 2014, ONNX 0):    n = tanh(xn + (r * h_{t-1}) w_hn^T + b_hn)
//   h_t = (1 - z) * n + z * h_{t-1}
#pragma once

#include "common.h"

namespace rnnfast {

struct GruShape {
  Index T, B, I, H;
  bool linear_before_reset;
  bool reverse;
  const int64_t* lengths;  // (B,) or null
};

template <typename T>
using GruWeights = Weights<T>;  // w_ih (3H, I), w_hh (3H, H), biases (3H,)

// What the forward saves for the backward; all null in inference. Read-only in the backward.
template <typename T>
struct GruCache {
  T* gates;  // (T, B, 3H) post-activation r, z, n; 0 at inactive rows
  T* h;      // (T, B, H) state after each time step; may be y itself when lengths is null
  T* hn;     // (T, B, H) h_{t-1} w_hn^T + b_hn, only with linear_before_reset (else null)
};

template <typename T>
using GruGrads = Grads<T>;

// y (T, B, H), h_n (B, H); x (T, B, I), h0 (B, H).
template <typename T>
void gru_forward(T* y, T* h_n, const GruCache<T>& cache, const T* x, const T* h0,
                 const GruWeights<T>& w, const GruShape& s);

// dy (T, B, H) and dh_n (B, H) may be null (zeros).
template <typename T>
void gru_backward(const GruGrads<T>& g, const T* dy, const T* dh_n, const T* x, const T* h0,
                  const GruWeights<T>& w, const GruCache<T>& cache, const GruShape& s);

}  // namespace rnnfast
