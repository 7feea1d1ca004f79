#include "runtime/trace.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <type_traits>

namespace ringplan::runtime {

static_assert(std::is_trivially_copyable_v<TraceEvent>, "events travel as raw bytes");

void TraceRecorder::add(TracePhase phase, TraceLane lane, int32_t step, int32_t src_rank, double start_s, double end_s,
                        bool skipped) {
  TraceEvent e;
  e.start_s = start_s;
  e.duration_s = end_s - start_s;
  e.iteration = iteration_;
  e.step = step;
  e.src_rank = src_rank;
  e.phase = phase;
  e.lane = lane;
  e.skipped = skipped ? 1 : 0;
  events_.push_back(e);
}

std::vector<std::vector<TraceEvent>> gather_events(Communicator& comm, const std::vector<TraceEvent>& mine) {
  const size_t p = static_cast<size_t>(comm.size());
  std::vector<int64_t> counts(p, 0);
  const int64_t n = static_cast<int64_t>(mine.size());
  comm.all_gather(&n, counts.data(), sizeof(int64_t));
  const size_t max_n = static_cast<size_t>(*std::max_element(counts.begin(), counts.end()));
  // Pad every rank's list to the longest so one fixed-size all_gather moves them all.
  std::vector<TraceEvent> padded(max_n);
  std::copy(mine.begin(), mine.end(), padded.begin());
  std::vector<TraceEvent> all(max_n * p);
  if (max_n > 0) comm.all_gather(padded.data(), all.data(), max_n * sizeof(TraceEvent));
  std::vector<std::vector<TraceEvent>> out(p);
  for (size_t r = 0; r < p; ++r)
    out[r].assign(all.begin() + static_cast<ptrdiff_t>(r * max_n),
                  all.begin() + static_cast<ptrdiff_t>(r * max_n + static_cast<size_t>(counts[r])));
  return out;
}

namespace {

// Appends one process group: metadata and complete events of every rank, at pid = base + rank.
void append_group(nlohmann::json& events, const std::vector<std::vector<LaneEvent>>& per_rank, int base,
                  const std::string& prefix, int sort_stride, int sort_offset) {
  for (size_t r = 0; r < per_rank.size(); ++r) {
    const int64_t pid = base + static_cast<int64_t>(r);
    events.push_back({{"ph", "M"}, {"name", "process_name"}, {"pid", pid}, {"args", {{"name", fmt::format("{}rank {}", prefix, r)}}}});
    if (sort_stride > 0)
      events.push_back({{"ph", "M"},
                        {"name", "process_sort_index"},
                        {"pid", pid},
                        {"args", {{"sort_index", sort_stride * static_cast<int64_t>(r) + sort_offset}}}});
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", 0}, {"args", {{"name", "compute"}}}});
    events.push_back({{"ph", "M"}, {"name", "thread_name"}, {"pid", pid}, {"tid", 1}, {"args", {{"name", "communication"}}}});
    for (const LaneEvent& e : per_rank[r]) {
      nlohmann::json args = nlohmann::json::object();
      for (const auto& [k, v] : e.args) args[k] = v;
      events.push_back({{"ph", "X"},
                        {"name", e.name},
                        {"cat", e.category},
                        {"pid", pid},
                        {"tid", e.lane},
                        {"ts", e.start_s * 1e6},
                        {"dur", e.duration_s * 1e6},
                        {"args", args}});
    }
  }
}

}  // namespace

std::string lane_trace_json(const std::vector<std::vector<LaneEvent>>& per_rank) {
  nlohmann::json events = nlohmann::json::array();
  append_group(events, per_rank, 0, "", 0, 0);
  nlohmann::json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  return doc.dump(1);
}

std::string overlay_trace_json(const std::vector<std::vector<LaneEvent>>& measured,
                               const std::vector<std::vector<LaneEvent>>& predicted) {
  nlohmann::json events = nlohmann::json::array();
  append_group(events, measured, 0, "measured ", 2, 0);
  append_group(events, predicted, kPredictedPidBase, "predicted ", 2, 1);
  nlohmann::json doc = {{"traceEvents", events}, {"displayTimeUnit", "ms"}};
  return doc.dump(1);
}

std::string chrome_trace_json(const std::vector<std::vector<TraceEvent>>& per_rank) {
  return lane_trace_json(ring_lane_events(per_rank));
}

std::vector<std::vector<LaneEvent>> ring_lane_events(const std::vector<std::vector<TraceEvent>>& per_rank) {
  std::vector<std::vector<LaneEvent>> lanes(per_rank.size());
  for (size_t r = 0; r < per_rank.size(); ++r)
    for (const TraceEvent& e : per_rank[r]) {
      const bool fwd = e.phase == TracePhase::forward;
      const bool compute = e.lane == TraceLane::compute;
      lanes[r].push_back({e.start_s, e.duration_s, compute ? 0 : 1,
                          fmt::format("{} {} step {} (block of rank {}){}", fwd ? "fwd" : "bwd",
                                      compute ? "compute" : "comm wait", e.step, e.src_rank,
                                      e.skipped ? " skipped: fully masked" : ""),
                          compute ? "compute" : "comm",
                          {{"iteration", e.iteration}, {"step", e.step}, {"src_rank", e.src_rank}}});
    }
  return lanes;
}

}  // namespace ringplan::runtime
