// Runs whole training steps of a plan's layout and measures them: per step the loss, each
// rank's wall time and time per cost-model term, each rank's exact buffer bytes by memory term
// and RSS high-water mark, optionally trace events and the parity check against one process.
// It knows shapes and the mesh only; what was predicted is the CLI's business.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/communicator.hpp"
#include "runtime/step/trainer.hpp"
#include "runtime/trace.hpp"

namespace ringplan::runtime::step {

struct StepRunOptions {
  int steps = 5;         // measured steps
  int warmup = 1;        // steps run first and not measured (their losses are reported)
  bool check_parity = false;
  bool trace = false;
  // Called on every rank after each step (warm-up included): (done, warmup + steps).
  std::function<void(int64_t done, int64_t total)> on_step;
};

struct StepMeasurement {
  std::vector<double> losses;                        // every step, warm-up first
  std::vector<double> grad_norms;                    // every step: the gradients' global L2 norm before clipping (0: no clipping)
  std::vector<double> reference_losses;              // with check_parity: one process, same steps
  std::vector<double> reference_grad_norms;          // with check_parity
  double max_param_diff = -1;                        // with check_parity: over every parameter of every rank
  int64_t params_compared = 0;
  std::vector<std::vector<StepTiming>> timing;       // [measured step][rank]
  // [measured step][rank][k]: the rank's k-th TP collective of the step (Trainer::
  // last_tp_comm_regions); empty inner vectors without TP.
  std::vector<std::vector<std::vector<double>>> tp_regions;
  std::vector<StepMemory> memory;                    // per rank
  // Per rank, -1 unknown: the rise of VmHWM over the run on the CPU, the drop in free device memory
  // on a GPU (gpu_trainer.hpp). JSON key of the maximum: rss_peak_delta_max_bytes (cli/run_step.cpp).
  std::vector<int64_t> peak_memory_rise_bytes;
  std::vector<std::string> hosts;                    // per rank
  std::vector<std::vector<StepEvent>> events;        // per rank, with trace
};

// Per measured step, the TP-collective time of `rank` split into transfer and waiting: for each
// of its TP collectives the smallest time any rank of its TP group (ranks sharing its dp, cp and
// pp coordinates; rank = tp + TP*(...)) spent in it is the transfer, the rest of the rank's own
// time there is waiting for slower peers (rank skew). Megatron-LM's timers take the same split
// with a barrier before each timed collective (--barrier-with-L1-time).
struct TpCommSplit {
  double transfer_s = 0;
  double wait_s = 0;
};
TpCommSplit split_tp_comm(const std::vector<std::vector<double>>& step_regions, int rank, int64_t tp);

// Collective over `world` (size = the spec's mesh world size). With check_parity rank 0 also
// trains the same model on one process afterwards and every rank's parameters are compared with
// it. Results are complete on rank 0 (timing, memory, hosts and events gathered there; losses on
// every rank).
StepMeasurement run_training_steps(Communicator& world, const StepSpec& spec, const StepRunOptions& opt);

// Chrome/Perfetto trace JSON of step events: pid = rank, tid 0 = compute lane, 1 = communication
// lane (integer ids with process/thread name metadata); event names are the cost-model terms.
std::string step_trace_json(const std::vector<std::vector<StepEvent>>& per_rank);
// The same events as lanes (what step_trace_json draws), e.g. for runtime::overlay_trace_json.
std::vector<std::vector<LaneEvent>> step_lane_events(const std::vector<std::vector<StepEvent>>& per_rank);

}  // namespace ringplan::runtime::step
