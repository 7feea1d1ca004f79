// The element-wise and GEMM pieces of one decoder layer, forward and backward, on dense
// row-major host buffers. Templated on the scalar so the same code runs the float32 training
// step and the float64 finite-difference check of its gradients.
//
// Conventions: an activation is [rows, cols] row-major, one row per token (rows = micro-batch
// sequences x tokens this rank holds). A weight is [out, in] (PyTorch's nn.Linear layout), so a
// linear layer is Y = X W^T; its backward is dX = dY W and dW += dY^T X. Every backward
// ACCUMULATES into weight gradients (gradient accumulation over micro-batches) and OVERWRITES
// activation gradients.
#pragma once
#include <Eigen/Core>
#include <cmath>
#include <cstdint>

namespace ringplan::runtime::step {

template <class T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using MapMat = Eigen::Map<RowMat<T>>;
template <class T>
using CMapMat = Eigen::Map<const RowMat<T>>;

// y[rows, out] = x[rows, in] * w[out, in]^T
template <class T>
void linear_forward(const T* x, const T* w, T* y, int64_t rows, int64_t in, int64_t out) {
  MapMat<T>(y, rows, out).noalias() = CMapMat<T>(x, rows, in) * CMapMat<T>(w, out, in).transpose();
}
// dx[rows, in] = dy * w (overwrites; skipped when dx is null); dw[out, in] += dy^T * x.
template <class T>
void linear_backward(const T* x, const T* w, const T* dy, T* dx, T* dw, int64_t rows, int64_t in, int64_t out) {
  if (dx != nullptr) MapMat<T>(dx, rows, in).noalias() = CMapMat<T>(dy, rows, out) * CMapMat<T>(w, out, in);
  MapMat<T>(dw, out, in).noalias() += CMapMat<T>(dy, rows, out).transpose() * CMapMat<T>(x, rows, in);
}

// RMSNorm over each row: y = x * rstd * g, rstd = 1 / sqrt(mean(x^2) + eps). Keeps rstd per row.
template <class T>
void rmsnorm_forward(const T* x, const T* g, T* y, T* rstd, int64_t rows, int64_t cols, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    double ss = 0;
    for (int64_t c = 0; c < cols; ++c) ss += double(xr[c]) * double(xr[c]);
    const double s = 1.0 / std::sqrt(ss / double(cols) + eps);
    rstd[r] = T(s);
    T* yr = y + r * cols;
    for (int64_t c = 0; c < cols; ++c) yr[c] = T(double(xr[c]) * s) * g[c];
  }
}
// dx = rstd * (g*dy - xhat * mean(xhat * g*dy)), xhat = x * rstd; dg += sum_rows dy * xhat.
template <class T>
void rmsnorm_backward(const T* x, const T* g, const T* rstd, const T* dy, T* dx, T* dg, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    const T* dyr = dy + r * cols;
    const double s = double(rstd[r]);
    double dot = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = double(xr[c]) * s;
      dot += xhat * double(g[c]) * double(dyr[c]);
      dg[c] += T(double(dyr[c]) * xhat);
    }
    const double mean = dot / double(cols);
    T* dxr = dx + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const double xhat = double(xr[c]) * s;
      dxr[c] = T(s * (double(g[c]) * double(dyr[c]) - xhat * mean));
    }
  }
}

// Rotary position embedding (Su et al. 2021, the "rotate half" layout of Llama/NeoX) applied in
// place to x[rows, heads, head_dim] where row r holds the token at GLOBAL position pos[r % n]:
// pairs (i, i + d/2) rotate by angle pos * base^(-2i/d). `inverse` rotates by -angle, which is
// the backward (a rotation's transpose is its inverse). head_dim must be even.
template <class T>
void rope_apply(T* x, const int64_t* pos, int64_t rows, int64_t n, int64_t heads, int64_t head_dim, double base,
                bool inverse) {
  const int64_t half = head_dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const double p = double(pos[r % n]);
    for (int64_t i = 0; i < half; ++i) {
      const double theta = p * std::pow(base, -2.0 * double(i) / double(head_dim));
      const double c = std::cos(theta), s = inverse ? -std::sin(theta) : std::sin(theta);
      for (int64_t h = 0; h < heads; ++h) {
        T* v = x + (r * heads + h) * head_dim;
        const double a = double(v[i]), b = double(v[i + half]);
        v[i] = T(a * c - b * s);
        v[i + half] = T(b * c + a * s);
      }
    }
  }
}

// MLP activations. Gated (SwiGLU): m = silu(a) * u. Not gated: m = gelu(a) (tanh form, as
// Megatron's GPT uses); u is unused.
template <class T>
T silu(T a) {
  return a / (T(1) + std::exp(-a));
}
template <class T>
void mlp_act_forward(const T* a, const T* u, T* m, int64_t count, bool gated) {
  if (gated) {
    for (int64_t i = 0; i < count; ++i) m[i] = silu(a[i]) * u[i];
  } else {
    const double k = std::sqrt(2.0 / M_PI);
    for (int64_t i = 0; i < count; ++i) {
      const double x = double(a[i]);
      m[i] = T(0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x))));
    }
  }
}
// Overwrites da (and du when gated) from dm.
template <class T>
void mlp_act_backward(const T* a, const T* u, const T* dm, T* da, T* du, int64_t count, bool gated) {
  if (gated) {
    for (int64_t i = 0; i < count; ++i) {
      const double x = double(a[i]);
      const double sg = 1.0 / (1.0 + std::exp(-x));
      const double s = x * sg;
      du[i] = T(double(dm[i]) * s);
      da[i] = T(double(dm[i]) * double(u[i]) * sg * (1.0 + x * (1.0 - sg)));
    }
  } else {
    const double k = std::sqrt(2.0 / M_PI);
    for (int64_t i = 0; i < count; ++i) {
      const double x = double(a[i]);
      const double inner = k * (x + 0.044715 * x * x * x);
      const double t = std::tanh(inner);
      const double dinner = k * (1.0 + 3.0 * 0.044715 * x * x);
      da[i] = T(double(dm[i]) * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner));
    }
  }
}

// [rows = b*n, heads*d] (token-major, as the projections produce it) <-> [b, heads, n, d]
// (head-major, as the attention kernels take it).
template <class T>
void tokens_to_heads(const T* src, T* dst, int64_t b, int64_t n, int64_t heads, int64_t d) {
  for (int64_t s = 0; s < b; ++s)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const T* from = src + ((s * n + t) * heads + h) * d;
        T* to = dst + ((s * heads + h) * n + t) * d;
        for (int64_t i = 0; i < d; ++i) to[i] = from[i];
      }
}
template <class T>
void heads_to_tokens(const T* src, T* dst, int64_t b, int64_t n, int64_t heads, int64_t d) {
  for (int64_t s = 0; s < b; ++s)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const T* from = src + ((s * heads + h) * n + t) * d;
        T* to = dst + ((s * n + t) * heads + h) * d;
        for (int64_t i = 0; i < d; ++i) to[i] = from[i];
      }
}

}  // namespace ringplan::runtime::step
