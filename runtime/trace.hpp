// Per-rank timing events of the ring (compute per step, comm wait per step) and their
// Chrome/Perfetto trace JSON: {"traceEvents":[{"ph":"X","pid":rank,"tid":0|1,...}]} (tid 0 =
// compute lane, 1 = communication lane, named by thread metadata).
// Events are fixed-size records so the ranks' lists gather with one all_gather.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/communicator.hpp"

namespace ringplan::runtime {

enum class TracePhase : int32_t { forward = 0, backward = 1 };
enum class TraceLane : int32_t { compute = 0, comm = 1 };

struct TraceEvent {
  double start_s = 0;        // since the recorder's epoch
  double duration_s = 0;
  int32_t iteration = 0;     // the executor's iteration (warm-up iterations are negative)
  int32_t step = 0;          // ring step
  int32_t src_rank = 0;      // CP rank the block in hand came from
  TracePhase phase = TracePhase::forward;
  TraceLane lane = TraceLane::compute;
  int32_t skipped = 0;       // 1: block fully hidden by the causal mask, no kernel call
};

class TraceRecorder {
 public:
  TraceRecorder() : epoch_(std::chrono::steady_clock::now()) {}
  // Resets the time origin; the executor calls it right after a barrier on every rank so the
  // ranks' clocks line up to within the barrier's skew.
  void reset_epoch() { epoch_ = std::chrono::steady_clock::now(); }
  double now_s() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_).count(); }
  void set_iteration(int32_t it) { iteration_ = it; }
  void add(TracePhase phase, TraceLane lane, int32_t step, int32_t src_rank, double start_s, double end_s, bool skipped);
  const std::vector<TraceEvent>& events() const { return events_; }
  void clear() { events_.clear(); }

 private:
  std::chrono::steady_clock::time_point epoch_;
  int32_t iteration_ = 0;
  std::vector<TraceEvent> events_;
};

// Collective: every rank's events, indexed by rank (the same result on every rank).
std::vector<std::vector<TraceEvent>> gather_events(Communicator& comm, const std::vector<TraceEvent>& mine);
// One complete event of the common trace layout (every ringplan trace: simulate, run --scope
// attention, run --scope step): on rank `pid`, lane 0 = compute, 1 = communication.
struct LaneEvent {
  double start_s = 0, duration_s = 0;
  int32_t lane = 0;
  std::string name, category;
  std::vector<std::pair<std::string, int64_t>> args;
};
// Chrome/Perfetto trace JSON of the common layout: pid = rank (process "rank r"), integer tid =
// lane with thread-name metadata ("compute", "communication"), ts/dur in microseconds.
std::string lane_trace_json(const std::vector<std::vector<LaneEvent>>& per_rank);

// Chrome trace JSON of ring events in the common layout (lane_trace_json).
std::string chrome_trace_json(const std::vector<std::vector<TraceEvent>>& per_rank);
// The same ring events as lanes (what chrome_trace_json draws).
std::vector<std::vector<LaneEvent>> ring_lane_events(const std::vector<std::vector<TraceEvent>>& per_rank);

// Predicted and measured timelines of one run in one trace (`ringplan run --trace`): two
// process groups in the common layout. Measured rank r is pid r, process "measured rank r";
// predicted rank r is pid kPredictedPidBase + r, process "predicted rank r"; both with tid 0 =
// compute, 1 = communication. process_sort_index lists predicted rank r right under measured
// rank r, so Perfetto / chrome://tracing show each rank's two timelines one above the other on
// the same time axis.
inline constexpr int kPredictedPidBase = 1000;
std::string overlay_trace_json(const std::vector<std::vector<LaneEvent>>& measured,
                               const std::vector<std::vector<LaneEvent>>& predicted);

}  // namespace ringplan::runtime
