// Vanilla (Elman) RNN over a whole sequence, one layer, one direction.
// Conventions (sizes, layouts, nullable pointers, time order): common.h.
//
//   h_t = act(x_t w_ih^T + b_ih + h_{t-1} w_hh^T + b_hh),  act = tanh or relu
#pragma once

#include "common.h"

namespace rnnfast {

enum class Nonlinearity { Tanh, Relu };

struct RnnShape {
  Index T, B, I, H;
  Nonlinearity act;
  bool reverse;
  const int64_t* lengths;  // (B,) or null
};

template <typename T>
using RnnWeights = Weights<T>;  // w_ih (H, I), w_hh (H, H), biases (H,)

// What the forward saves for the backward; null in inference. Read-only in the backward.
template <typename T>
struct RnnCache {
  T* h;  // (T, B, H) state after each time step; may be y itself when lengths is null
};

template <typename T>
using RnnGrads = Grads<T>;

// y (T, B, H), h_n (B, H); x (T, B, I), h0 (B, H).
template <typename T>
void rnn_forward(T* y, T* h_n, const RnnCache<T>& cache, const T* x, const T* h0,
                 const RnnWeights<T>& w, const RnnShape& s);

// dy (T, B, H) and dh_n (B, H) may be null (zeros).
template <typename T>
void rnn_backward(const RnnGrads<T>& g, const T* dy, const T* dh_n, const T* x, const T* h0,
                  const RnnWeights<T>& w, const RnnCache<T>& cache, const RnnShape& s);

}  // namespace rnnfast
