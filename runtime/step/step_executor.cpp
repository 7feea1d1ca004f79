// Runs and measures whole training steps (see step_executor.hpp).
#include "runtime/step/step_executor.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.hpp"
#include "runtime/memory.hpp"
#include "runtime/trace.hpp"

namespace ringplan::runtime::step {
namespace {

// Fixed-size record of one parameter block for the parity exchange.
struct BlockRecord {
  int64_t id, row0, rows, col0, cols, offset;
};

bool is_comm(Term t) {
  return t == Term::ring_exposed || t == Term::tp_comm || t == Term::dp_comm_exposed || t == Term::zero_comm ||
         t == Term::pp_comm;
}

}  // namespace

StepMeasurement run_training_steps(Communicator& world, const StepSpec& spec, const StepRunOptions& opt) {
  StepMeasurement m;
  const int W = world.size(), me = world.rank();
  const bool root = me == 0;
  // The parity reference runs on rank 0 only, after the steps: refuse a spec it cannot run
  // here, on every rank, before any work (a refusal on rank 0 alone would leave the others
  // waiting for it until the fault timeout).
  const StepSpec ref_spec = one_process_reference(spec);
  if (opt.check_parity) check_step_spec(ref_spec);
  const bool reset = reset_peak_rss();
  const int64_t rss0 = current_rss_bytes();
  Trainer<float> trainer(spec, world);
  std::vector<StepTiming> mine;
  std::vector<std::vector<double>> my_tp;  // [measured step][k]
  world.barrier();
  if (opt.trace) trainer.record_events(std::chrono::steady_clock::now());
  const int total = opt.warmup + opt.steps;
  for (int s = 0; s < total; ++s) {
    world.barrier();  // every step starts together: the step time is the slowest rank's
    m.losses.push_back(trainer.train_step());
    m.grad_norms.push_back(trainer.last_grad_norm());
    if (s >= opt.warmup) {
      mine.push_back(trainer.last_timing());
      my_tp.push_back(trainer.last_tp_comm_regions());
    }
    if (opt.on_step) opt.on_step(s + 1, total);
  }
  const int64_t rss1 = peak_rss_bytes();
  const int64_t rss_delta = (rss0 >= 0 && rss1 >= 0) ? rss1 - rss0 : -1;
  (void)reset;

  // Gather timings, memory and hosts (fixed-size records, one all_gather each).
  m.timing.assign(mine.size(), std::vector<StepTiming>(static_cast<size_t>(W)));
  for (size_t s = 0; s < mine.size(); ++s) {
    std::vector<StepTiming> all(static_cast<size_t>(W));
    world.all_gather(&mine[s], all.data(), sizeof(StepTiming));
    m.timing[s] = all;
  }
  {
    // TP regions: the same count every step on a rank (its schedule is fixed); padded to the
    // largest count for one fixed-size all_gather.
    const size_t steps = my_tp.size();
    int64_t count = steps ? static_cast<int64_t>(my_tp[0].size()) : 0;
    for (const auto& v : my_tp)
      if (static_cast<int64_t>(v.size()) != count)
        throw Error(ErrorKind::runtime, fmt::format("rank {}: the number of TP collectives changed between steps ({} and {})",
                                                    me, count, v.size()));
    std::vector<int64_t> counts(static_cast<size_t>(W));
    world.all_gather(&count, counts.data(), sizeof(int64_t));
    const int64_t most = *std::max_element(counts.begin(), counts.end());
    std::vector<double> flat(steps * static_cast<size_t>(most), 0.0), all(flat.size() * static_cast<size_t>(W));
    for (size_t s = 0; s < steps; ++s) std::copy(my_tp[s].begin(), my_tp[s].end(), flat.begin() + s * most);
    if (!flat.empty()) world.all_gather(flat.data(), all.data(), flat.size() * sizeof(double));
    m.tp_regions.assign(steps, std::vector<std::vector<double>>(static_cast<size_t>(W)));
    for (size_t s = 0; s < steps; ++s)
      for (int r = 0; r < W; ++r) {
        const double* src = all.data() + static_cast<size_t>(r) * flat.size() + s * most;
        m.tp_regions[s][static_cast<size_t>(r)].assign(src, src + counts[static_cast<size_t>(r)]);
      }
  }
  const StepMemory mem = trainer.memory();
  m.memory.resize(static_cast<size_t>(W));
  world.all_gather(&mem, m.memory.data(), sizeof(StepMemory));
  m.peak_memory_rise_bytes.resize(static_cast<size_t>(W));
  world.all_gather(&rss_delta, m.peak_memory_rise_bytes.data(), sizeof(int64_t));
  for (int r = 0; r < W; ++r) m.hosts.push_back(world.describe_rank(r));
  if (opt.trace) {
    const std::vector<StepEvent>& ev = trainer.events();
    int64_t count = static_cast<int64_t>(ev.size());
    std::vector<int64_t> counts(static_cast<size_t>(W));
    world.all_gather(&count, counts.data(), sizeof(int64_t));
    const int64_t most = *std::max_element(counts.begin(), counts.end());
    std::vector<StepEvent> padded(static_cast<size_t>(most));
    std::copy(ev.begin(), ev.end(), padded.begin());
    std::vector<StepEvent> all(static_cast<size_t>(most * W));
    if (most > 0) world.all_gather(padded.data(), all.data(), static_cast<size_t>(most) * sizeof(StepEvent));
    m.events.resize(static_cast<size_t>(W));
    for (int r = 0; r < W; ++r)
      m.events[static_cast<size_t>(r)].assign(all.begin() + r * most,
                                              all.begin() + r * most + counts[static_cast<size_t>(r)]);
  }

  if (opt.check_parity) {
    // Rank 0 trains the same model, data and seed on one process; every rank sends it its
    // parameter blocks, which it compares element by element with the full parameters.
    trainer.gather_full_parameters();  // ZeRO-3: every rank's blocks in full (collective)
    auto self = world.split(me, 0);
    double worst = 0;
    int64_t compared = 0;
    if (root) {
      Trainer<float> ref(ref_spec, *self);
      for (int s = 0; s < total; ++s) {
        m.reference_losses.push_back(ref.train_step());
        m.reference_grad_norms.push_back(ref.last_grad_norm());
      }
      auto compare = [&](const std::vector<BlockRecord>& blocks, const std::vector<float>& values) {
        for (const BlockRecord& b : blocks)
          for (int64_t i = 0; i < b.rows; ++i)
            for (int64_t j = 0; j < b.cols; ++j) {
              const float* r = ref.find(static_cast<int32_t>(b.id), b.row0 + i, b.col0 + j);
              const double v = values[static_cast<size_t>(b.offset + i * b.cols + j)];
              worst = std::max(worst, r == nullptr ? INFINITY : std::abs(v - double(*r)));
              ++compared;
            }
      };
      for (int r = 0; r < W; ++r) {
        std::vector<BlockRecord> blocks;
        std::vector<float> values;
        if (r == 0) {
          for (const auto& p : trainer.params()) blocks.push_back({p.id, p.row0, p.rows, p.col0, p.cols, int64_t(p.offset)});
          values = trainer.parameters();
        } else {
          int64_t sizes[2] = {0, 0};
          RequestPtr q = world.post_recv(sizes, sizeof(sizes), r, 41);
          world.wait(q);
          blocks.resize(static_cast<size_t>(sizes[0]));
          values.resize(static_cast<size_t>(sizes[1]));
          std::vector<RequestPtr> rq;
          rq.push_back(world.post_recv(blocks.data(), blocks.size() * sizeof(BlockRecord), r, 42));
          rq.push_back(world.post_recv(values.data(), values.size() * sizeof(float), r, 43));
          world.wait_all(rq);
        }
        compare(blocks, values);
      }
    } else {
      std::vector<BlockRecord> blocks;
      for (const auto& p : trainer.params()) blocks.push_back({p.id, p.row0, p.rows, p.col0, p.cols, int64_t(p.offset)});
      const std::vector<float>& values = trainer.parameters();
      int64_t sizes[2] = {static_cast<int64_t>(blocks.size()), static_cast<int64_t>(values.size())};
      std::vector<RequestPtr> rq;
      rq.push_back(world.post_send(sizes, sizeof(sizes), 0, 41));
      rq.push_back(world.post_send(blocks.data(), blocks.size() * sizeof(BlockRecord), 0, 42));
      rq.push_back(world.post_send(values.data(), values.size() * sizeof(float), 0, 43));
      world.wait_all(rq);
    }
    m.max_param_diff = worst;
    m.params_compared = compared;
  }
  return m;
}

TpCommSplit split_tp_comm(const std::vector<std::vector<double>>& step_regions, int rank, int64_t tp) {
  TpCommSplit out;
  const std::vector<double>& own = step_regions[static_cast<size_t>(rank)];
  const int first = rank - static_cast<int>(rank % tp);  // the group's tp = 0 rank
  for (size_t k = 0; k < own.size(); ++k) {
    double fastest = own[k];
    for (int t = 0; t < tp; ++t) {
      const std::vector<double>& peer = step_regions[static_cast<size_t>(first + t)];
      if (k < peer.size()) fastest = std::min(fastest, peer[k]);
    }
    out.transfer_s += fastest;
    out.wait_s += own[k] - fastest;
  }
  return out;
}

std::string step_trace_json(const std::vector<std::vector<StepEvent>>& per_rank) {
  return lane_trace_json(step_lane_events(per_rank));
}

std::vector<std::vector<LaneEvent>> step_lane_events(const std::vector<std::vector<StepEvent>>& per_rank) {
  std::vector<std::vector<LaneEvent>> lanes(per_rank.size());
  for (size_t r = 0; r < per_rank.size(); ++r)
    for (const StepEvent& e : per_rank[r]) {
      const bool comm = is_comm(e.term);
      lanes[r].push_back({e.start_s, e.duration_s, comm ? 1 : 0, term_name(e.term), comm ? "comm" : "compute",
                          {{"step", e.step}}});
    }
  return lanes;
}

}  // namespace ringplan::runtime::step
