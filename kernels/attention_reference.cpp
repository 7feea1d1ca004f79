// Plain float64 reference of block attention: one query row at a time, straight from the
// formulas in kernels/attention.hpp, no tiling, no online softmax. Tests and benchmarks check
// every fast kernel against it; tests check it against finite differences.
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention.hpp"

namespace ringplan::kernels {
namespace {

constexpr double kNegInfD = -std::numeric_limits<double>::infinity();

void check_reference_args(const char* where, const void* q, const void* k, const void* v,
                          const int64_t* q_pos, const int64_t* k_pos, int64_t b, int64_t h,
                          int64_t hkv, int64_t n, int64_t m, int64_t d, bool causal, const int64_t* q_docs,
                          const int64_t* k_docs) {
  auto fail = [&](const std::string& what) { throw std::invalid_argument(std::string(where) + ": " + what); };
  if (b < 0 || n < 0 || m < 0) fail("batch, n and m must be >= 0");
  if (h < 1 || hkv < 1 || d < 1) fail("heads, kv_heads and head_dim must be >= 1");
  if (h % hkv != 0)
    fail("heads = " + std::to_string(h) + " is not a multiple of kv_heads = " + std::to_string(hkv));
  if (b * n > 0 && q == nullptr) fail("q is null");
  if (b * m > 0 && (k == nullptr || v == nullptr)) fail("k or v is null");
  if (causal && ((n > 0 && q_pos == nullptr) || (m > 0 && k_pos == nullptr)))
    fail("causal masking needs q_pos and k_pos");
  if ((q_docs == nullptr) != (k_docs == nullptr)) fail("document ids must be given for both queries and keys or neither");
}

bool visible(bool causal, const int64_t* q_pos, const int64_t* k_pos, const int64_t* q_docs, const int64_t* k_docs,
             int64_t i, int64_t j) {
  if (q_docs != nullptr && q_docs[i] != k_docs[j]) return false;
  return !causal || k_pos[j] <= q_pos[i];
}

double dot(const double* a, const double* b, int64_t d) {
  double s = 0.0;
  for (int64_t x = 0; x < d; ++x) s += a[x] * b[x];
  return s;
}

}  // namespace

void reference_forward(const double* q, const double* k, const double* v, const int64_t* q_pos,
                       const int64_t* k_pos, int64_t b, int64_t h, int64_t hkv, int64_t n,
                       int64_t m, int64_t d, bool causal, double scale, double* out, double* lse,
                       const int64_t* q_docs, const int64_t* k_docs) {
  check_reference_args("reference_forward", q, k, v, q_pos, k_pos, b, h, hkv, n, m, d, causal, q_docs, k_docs);
  if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> s(m);
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi) {
      const int64_t kvh = hi * hkv / h;
      const double* kh = k + (bi * hkv + kvh) * m * d;
      const double* vh = v + (bi * hkv + kvh) * m * d;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = (bi * h + hi) * n + i;
        const double* qi = q + row * d;
        double* oi = out + row * d;
        double mx = kNegInfD;
        for (int64_t j = 0; j < m; ++j) {
          s[j] = visible(causal, q_pos, k_pos, q_docs, k_docs, i, j) ? scale * dot(qi, kh + j * d, d) : kNegInfD;
          mx = std::max(mx, s[j]);
        }
        for (int64_t x = 0; x < d; ++x) oi[x] = 0.0;
        if (mx == kNegInfD) {  // no visible key
          lse[row] = kNegInfD;
          continue;
        }
        double sum = 0.0;
        for (int64_t j = 0; j < m; ++j) {
          if (s[j] == kNegInfD) continue;
          const double p = std::exp(s[j] - mx);
          sum += p;
          for (int64_t x = 0; x < d; ++x) oi[x] += p * vh[j * d + x];
        }
        for (int64_t x = 0; x < d; ++x) oi[x] /= sum;
        lse[row] = mx + std::log(sum);
      }
    }
}

void reference_backward(const double* q, const double* k, const double* v, const double* out,
                        const double* grad_out, const double* lse, const int64_t* q_pos,
                        const int64_t* k_pos, int64_t b, int64_t h, int64_t hkv, int64_t n,
                        int64_t m, int64_t d, bool causal, double scale, double* grad_q,
                        double* grad_k, double* grad_v, const int64_t* q_docs, const int64_t* k_docs) {
  check_reference_args("reference_backward", q, k, v, q_pos, k_pos, b, h, hkv, n, m, d, causal, q_docs, k_docs);
  if (scale == 0.0) scale = 1.0 / std::sqrt(static_cast<double>(d));
  // Outputs are overwritten (not accumulated).
  for (int64_t x = 0; x < b * h * n * d; ++x) grad_q[x] = 0.0;
  for (int64_t x = 0; x < b * hkv * m * d; ++x) grad_k[x] = grad_v[x] = 0.0;
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi) {
      const int64_t kvh = hi * hkv / h;
      const int64_t kv_off = (bi * hkv + kvh) * m * d;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t row = (bi * h + hi) * n + i;
        if (!(lse[row] > kNegInfD)) continue;  // no visible key: contributes nothing
        const double* qi = q + row * d;
        const double* doi = grad_out + row * d;
        const double delta = dot(doi, out + row * d, d);  // D = rowsum(dO * O)
        for (int64_t j = 0; j < m; ++j) {
          if (!visible(causal, q_pos, k_pos, q_docs, k_docs, i, j)) continue;
          const double* kj = k + kv_off + j * d;
          const double* vj = v + kv_off + j * d;
          const double p = std::exp(scale * dot(qi, kj, d) - lse[row]);
          const double ds = p * (dot(doi, vj, d) - delta);
          for (int64_t x = 0; x < d; ++x) {
            grad_v[kv_off + j * d + x] += p * doi[x];
            grad_q[row * d + x] += scale * ds * kj[x];
            grad_k[kv_off + j * d + x] += scale * ds * qi[x];
          }
        }
      }
    }
}

}  // namespace ringplan::kernels
