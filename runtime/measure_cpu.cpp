// CPU measurements for `ringplan calibrate` (see measure_cpu.hpp).
#include "runtime/measure_cpu.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "kernels/attention.hpp"
#include "runtime/executor.hpp"

namespace ringplan::runtime {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

double median(std::vector<double> xs) { return sample_stats(std::move(xs)).median; }

}  // namespace

KernelPoint measure_kernels(Communicator& world, const KernelShape& a, int64_t n) {
  using kernels::ElemType;
  const int64_t b = a.batch, H = a.heads, Hkv = a.kv_heads, d = a.head_dim;
  std::vector<int64_t> pos(static_cast<size_t>(n));
  std::iota(pos.begin(), pos.end(), int64_t{0});
  const size_t qe = static_cast<size_t>(b * H * n * d), ke = static_cast<size_t>(b * Hkv * n * d);
  std::vector<float> q(qe), k(ke), v(ke), o(qe), dout(qe), dq(qe), dk(ke), dv(ke), lse(static_cast<size_t>(b * H * n)),
      delta(lse.size());
  fill_synthetic(q.data(), 11, SyntheticTensor::q, b, H, pos.data(), n, d);
  fill_synthetic(k.data(), 11, SyntheticTensor::k, b, Hkv, pos.data(), n, d);
  fill_synthetic(v.data(), 11, SyntheticTensor::v, b, Hkv, pos.data(), n, d);
  fill_synthetic(dout.data(), 11, SyntheticTensor::grad_out, b, H, pos.data(), n, d);
  kernels::BlockParams p;
  p.q = kernels::dense_view(q.data(), ElemType::f32, b, H, n, d);
  p.k = kernels::dense_view(k.data(), ElemType::f32, b, Hkv, n, d);
  p.v = kernels::dense_view(v.data(), ElemType::f32, b, Hkv, n, d);
  p.q_positions = pos.data();
  p.k_positions = pos.data();
  p.causal = false;
  kernels::ForwardOut fo{kernels::dense_view(o.data(), ElemType::f32, b, H, n, d), kernels::dense_rows(lse.data(), b, H, n)};
  kernels::BackwardArgs g{kernels::dense_view(o.data(), ElemType::f32, b, H, n, d),
                          kernels::dense_view(dout.data(), ElemType::f32, b, H, n, d),
                          kernels::dense_rows(lse.data(), b, H, n),
                          kernels::dense_rows(delta.data(), b, H, n),
                          kernels::dense_view(dq.data(), ElemType::f32, b, H, n, d),
                          kernels::dense_view(dk.data(), ElemType::f32, b, Hkv, n, d),
                          kernels::dense_view(dv.data(), ElemType::f32, b, Hkv, n, d)};
  kernels::TileConfig tiles;
  tiles.threads = a.threads;
  std::vector<float> scores(static_cast<size_t>(kernels::materialized_scores_elems(p)));

  // Validate before timing: the forward must produce finite output and lse.
  kernels::cpu_flash_forward(p, fo, tiles);
  for (size_t i = 0; i < o.size(); i += 97)
    if (!std::isfinite(o[i])) throw Error(ErrorKind::runtime, fmt::format("calibrate: non-finite flash output at n={}", n));
  kernels::attention_backward_delta(g.out, g.grad_out, g.delta);

  auto time_it = [&](auto&& fn) {
    // Each timed repetition runs the kernel `calls` times, enough for >= 50 ms, so that time
    // slicing of oversubscribed ranks averages out instead of deciding a single call's time.
    const auto tw = clock_type::now();
    fn();  // warm-up
    double calls = std::max(1.0, std::ceil(0.05 / std::max(1e-6, seconds_since(tw))));
    world.all_reduce_max(&calls, 1);  // the same count on every rank, so all ranks stay busy together
    std::vector<double> ts;
    for (int r = 0; r < a.reps; ++r) {
      world.barrier();  // all ranks compute at once, as in a ring run
      const auto t0 = clock_type::now();
      for (int c = 0; c < static_cast<int>(calls); ++c) fn();
      ts.push_back(seconds_since(t0) / calls);
    }
    // Median over reps on this rank, then the median over ranks.
    std::vector<double> all(static_cast<size_t>(world.size()));
    const double mine = median(ts);
    world.all_gather(&mine, all.data(), sizeof(double));
    return median(all);
  };
  KernelPoint kp;
  kp.tokens = n;
  kp.tile = std::max(tiles.tile_q, tiles.tile_k);
  kp.flops = kernels::forward_flops(b, H, n * n, d);
  kp.fwd_s = time_it([&] { kernels::cpu_flash_forward(p, fo, tiles); });
  kp.bwd_s = time_it([&] { kernels::cpu_flash_backward(p, g, tiles); });
  kp.mat_fwd_s = time_it([&] { kernels::cpu_materialized_forward(p, fo, scores.data()); });
  kp.mat_bwd_s = time_it([&] { kernels::cpu_materialized_backward(p, g, scores.data()); });
  // A causal diagonal block (a ring's step 0): FLOPs count visible pairs only, so masked
  // tiles show up as a lower rate.
  p.causal = true;
  kp.causal_flops = kernels::forward_flops(b, H, kernels::visible_pairs(pos.data(), n, pos.data(), n, true), d);
  kp.causal_fwd_s = time_it([&] { kernels::cpu_flash_forward(p, fo, tiles); });
  // The backward needs this block's own (O, lse, D): the forward above just wrote O and lse.
  kernels::attention_backward_delta(g.out, g.grad_out, g.delta);
  kp.causal_bwd_s = time_it([&] { kernels::cpu_flash_backward(p, g, tiles); });
  for (size_t i = 0; i < dq.size(); i += 97)
    if (!std::isfinite(dq[i])) throw Error(ErrorKind::runtime, fmt::format("calibrate: non-finite flash dQ at n={}", n));
  return kp;
}


LinkPoint measure_link(Communicator& world, int64_t bytes, int reps) {
  const int P = world.size(), r = world.rank();
  std::vector<char> sbuf(static_cast<size_t>(bytes), 1), rbuf(static_cast<size_t>(bytes), 0);
  LinkPoint lp;
  lp.bytes = bytes;
  // Ping-pong between ranks 0 and 1: one way = round trip / 2.
  std::vector<double> ts;
  for (int it = -1; it < reps; ++it) {
    world.barrier();
    const auto t0 = clock_type::now();
    if (r == 0) {
      auto s = world.post_send(sbuf.data(), sbuf.size(), 1, 21);
      world.wait(s);
      auto rr = world.post_recv(rbuf.data(), rbuf.size(), 1, 22);
      world.wait(rr);
    } else if (r == 1) {
      auto rr = world.post_recv(rbuf.data(), rbuf.size(), 0, 21);
      world.wait(rr);
      auto s = world.post_send(sbuf.data(), sbuf.size(), 0, 22);
      world.wait(s);
    }
    if (it >= 0) ts.push_back(seconds_since(t0) / 2);
  }
  double pp = median(ts);
  world.broadcast(&pp, sizeof(pp), 0);
  lp.pingpong_one_way_s = pp;
  // Ring exchange: the pattern of one ring-attention step.
  ts.clear();
  for (int it = -1; it < reps; ++it) {
    world.barrier();
    const auto t0 = clock_type::now();
    std::vector<RequestPtr> reqs;
    reqs.push_back(world.post_recv(rbuf.data(), rbuf.size(), (r - 1 + P) % P, 23));
    reqs.push_back(world.post_send(sbuf.data(), sbuf.size(), (r + 1) % P, 23));
    world.wait_all(reqs);
    if (it >= 0) ts.push_back(seconds_since(t0));
  }
  double mine = median(ts);
  world.all_reduce_max(&mine, 1);  // a ring step lasts as long as its slowest transfer
  lp.ring_step_s = mine;
  return lp;
}

double measure_copy_bandwidth(Communicator& world) {
  const size_t bytes = size_t{64} << 20;
  std::vector<char> src(bytes, 3), dst(bytes, 0);
  std::vector<double> ts;
  for (int it = -1; it < 3; ++it) {
    world.barrier();
    const auto t0 = clock_type::now();
    std::memcpy(dst.data(), src.data(), bytes);
    if (it >= 0) ts.push_back(seconds_since(t0));
  }
  if (dst[bytes / 2] != 3) throw Error(ErrorKind::runtime, "calibrate: memory copy check failed");
  std::vector<double> all(static_cast<size_t>(world.size()));
  const double mine = 2.0 * static_cast<double>(bytes) / median(ts);  // read + write traffic
  world.all_gather(&mine, all.data(), sizeof(double));
  return median(all);
}

int64_t mem_total_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (f >> key >> kib >> unit)
    if (key == "MemTotal:") return kib * 1024;
  return 0;
}

HostCounts count_hosts(const Communicator& world) {
  std::map<std::string, int64_t> per_host;
  for (int r = 0; r < world.size(); ++r) {
    const std::string d = world.describe_rank(r);  // "rank 3 (host node07)"
    per_host[d.substr(d.find("host "))]++;
  }
  HostCounts h;
  h.hosts = static_cast<int64_t>(per_host.size());
  for (const auto& [host, n] : per_host) h.ranks_per_host = std::max(h.ranks_per_host, n);
  return h;
}

}  // namespace ringplan::runtime
