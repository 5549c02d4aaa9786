// LSTM over a whole sequence, one layer, one direction; peephole, coupled-gate and projection
// variants. Conventions (sizes, layouts, nullable pointers, time order): common.h.
//
//   a   = x_t w_ih^T + b_ih + h_{t-1} w_hh^T + b_hh                   gates i, f, g, o
//   i   = sigmoid(a_i + p_i * c_{t-1})
//   f   = 1 - i (coupled)  or  sigmoid(a_f + p_f * c_{t-1})
//   g   = tanh(a_g)
//   c_t = f * c_{t-1} + i * g
//   o   = sigmoid(a_o + p_o * c_t)
//   h_t = o * tanh(c_t), then h_t w_hr^T with a projection
#pragma once

#include "common.h"

namespace rnnfast {

struct LstmShape {
  Index T, B, I, H, P;  // P = H without projection
  bool coupled;         // f = 1 - i (ONNX input_forget)
  bool reverse;
  const int64_t* lengths;  // (B,) or null
};

template <typename T>
struct LstmWeights : Weights<T> {  // w_ih (4H, I), w_hh (4H, P), biases (4H,), and:
  const T* w_hr;    // (P, H) or null: projection
  const T* w_peep;  // (3, H) or null: rows p_i, p_f, p_o
};

// What the forward saves for the backward; all null in inference. Read-only in the backward.
template <typename T>
struct LstmCache {
  T* gates;  // (T, B, 4H) post-activation i, f, g, o; 0 at inactive rows
  T* c;      // (T, B, H) cell state after each time step (carried through inactive rows)
  T* h;      // (T, B, P) hidden state after each time step; may be y itself when lengths is null
};

template <typename T>
struct LstmGrads : Grads<T> {
  T* dc0;      // (B, H)
  T* dw_hr;    // (P, H), written iff w_hr is given
  T* dw_peep;  // (3, H), written iff w_peep is given
};

// y (T, B, P), h_n (B, P), c_n (B, H); x (T, B, I), h0 (B, P), c0 (B, H).
template <typename T>
void lstm_forward(T* y, T* h_n, T* c_n, const LstmCache<T>& cache, const T* x, const T* h0,
                  const T* c0, const LstmWeights<T>& w, const LstmShape& s);

// dy (T, B, P), dh_n (B, P), dc_n (B, H) may be null (zeros). The cache is the forward's.
template <typename T>
void lstm_backward(const LstmGrads<T>& g, const T* dy, const T* dh_n, const T* dc_n, const T* x,
                   const T* h0, const T* c0, const LstmWeights<T>& w, const LstmCache<T>& cache,
                   const LstmShape& s);

}  // namespace rnnfast
