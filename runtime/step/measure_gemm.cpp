// Linear-layer GEMM timings for calibrate (see measure_gemm.hpp).
#include "runtime/step/measure_gemm.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.hpp"
#include "runtime/executor.hpp"
#include "runtime/step/ops.hpp"

namespace ringplan::runtime::step {
namespace {

double median(std::vector<double> xs) { return sample_stats(std::move(xs)).median; }

// Deterministic values in [-1, 1): a hash of (seed, index), so every rank times the same data.
void fill(std::vector<float>& v, uint64_t seed) {
  for (size_t i = 0; i < v.size(); ++i) {
    uint64_t z = (seed + 1) * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 31)) * 0x94D049BB133111EBull;
    v[i] = static_cast<float>(double(z >> 40) / double(1ull << 23) - 1.0);
  }
}

// |got - want| within float32 rounding of a sum whose terms' magnitudes add up to `scale`.
bool close(double got, double want, double scale) { return std::abs(got - want) <= 1e-5 * scale + 1e-6; }

}  // namespace

std::vector<GemmShape> step_gemm_shapes(const ModelConfig& m, const Mesh& mesh, int64_t rows) {
  const int64_t tp = mesh.tp, h = m.hidden, d = m.head_dim;
  const int64_t q = m.heads / tp * d, kv = m.kv_heads / tp * d, f = m.ffn_hidden / tp, vocab = m.vocab / tp;
  std::vector<GemmShape> all = {{rows, h, q}, {rows, h, kv}, {rows, q, h}, {rows, h, f}, {rows, f, h}, {rows, h, vocab}};
  std::vector<GemmShape> out;
  for (const GemmShape& s : all)
    if (s.rows > 0 && s.in > 0 && s.out > 0 && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  return out;
}

std::vector<GemmPoint> measure_gemms(Communicator& world, const std::vector<GemmShape>& shapes, int reps) {
  std::vector<GemmPoint> out;
  for (const GemmShape& s : shapes) {
    const size_t xs = static_cast<size_t>(s.rows * s.in), ws = static_cast<size_t>(s.out * s.in),
                 ys = static_cast<size_t>(s.rows * s.out);
    std::vector<float> x(xs), w(ws), y(ys), dy(ys), dx(xs), dw(ws, 0.0f);
    fill(x, 1);
    fill(w, 2);
    fill(dy, 3);
    auto fail = [&](const char* what, int64_t i, int64_t j, double got, double want) {
      throw Error(ErrorKind::runtime,
                  fmt::format("calibrate: the {} GEMM of shape rows {} x in {} x out {} returned a wrong element "
                              "({}, {}): {} where float64 gives {}, on {}",
                              what, s.rows, s.in, s.out, i, j, got, want, world.describe_rank(world.rank())));
    };
    // Check (untimed): sampled elements of Y, dX and dW against float64 sums.
    linear_forward(x.data(), w.data(), y.data(), s.rows, s.in, s.out);
    linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), s.rows, s.in, s.out);
    // A float64 dot product of n elements of a (stride sa) and b (stride sb), with the sum of the
    // terms' magnitudes, which sets the float32 rounding the result may carry.
    auto check = [&](const char* what, int64_t i, int64_t j, float got, const float* a, int64_t sa, const float* b,
                     int64_t sb, int64_t n) {
      double want = 0, scale = 0;
      for (int64_t c = 0; c < n; ++c) {
        const double p = double(a[c * sa]) * double(b[c * sb]);
        want += p;
        scale += std::abs(p);
      }
      if (!close(got, want, scale)) fail(what, i, j, got, want);
    };
    for (int t = 0; t < 8; ++t) {
      const int64_t i = (t * 7919) % s.rows, j = (t * 104729) % s.out, k = (t * 1299709) % s.in;
      // Y[i, j] = X[i, :] . W[j, :];  dX[i, k] = dY[i, :] . W[:, k];  dW[j, k] = dY[:, j] . X[:, k]
      check("forward", i, j, y[size_t(i * s.out + j)], &x[size_t(i * s.in)], 1, &w[size_t(j * s.in)], 1, s.in);
      check("data-gradient", i, k, dx[size_t(i * s.in + k)], &dy[size_t(i * s.out)], 1, &w[size_t(k)], s.in, s.out);
      check("weight-gradient", j, k, dw[size_t(j * s.in + k)], &dy[size_t(j)], s.out, &x[size_t(k)], s.in, s.rows);
    }
    // Time: every rank at once after a barrier, `reps` times each.
    std::vector<double> fwd, bwd;
    for (int r = 0; r < reps; ++r) {
      world.barrier();
      auto t0 = std::chrono::steady_clock::now();
      linear_forward(x.data(), w.data(), y.data(), s.rows, s.in, s.out);
      fwd.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      world.barrier();
      t0 = std::chrono::steady_clock::now();
      linear_backward(x.data(), w.data(), dy.data(), dx.data(), dw.data(), s.rows, s.in, s.out);
      bwd.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    double mine[2] = {median(fwd), median(bwd)};
    std::vector<double> all(2 * static_cast<size_t>(world.size()));
    world.all_gather(mine, all.data(), sizeof(mine));
    std::vector<double> f_all, b_all;
    for (int r = 0; r < world.size(); ++r) {
      f_all.push_back(all[2 * size_t(r)]);
      b_all.push_back(all[2 * size_t(r) + 1]);
    }
    out.push_back({s, median(f_all), median(b_all)});
  }
  return out;
}

}  // namespace ringplan::runtime::step
