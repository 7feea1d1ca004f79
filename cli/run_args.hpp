// Arguments of `ringplan run`, shared by its two scopes (cmd_run.cpp: one attention layer;
// run_step.cpp: whole training steps).
#pragma once
#include <string>

#include "planner/plan_file.hpp"
#include "runtime/mpi_communicator.hpp"

namespace ringplan::cli {

struct RunArgs {
  std::string plan;
  std::string scope = "step";  // step | attention
  int iters = 5;               // attention scope: measured iterations
  int steps = 5;               // step scope: measured steps
  int warmup = 1;
  int64_t layers = 0;          // step scope: 0 = the plan's model layers
  bool check_parity = false;
  std::string format = "table";
  std::string trace;
  std::string profile;
  double timeout_s = 0;        // --timeout, used when timeout_given (else env RINGPLAN_TIMEOUT_S or 60 s)
  bool timeout_given = false;  // every given value is checked: 0, negative and nan are errors
  int threads = 1;
  std::string device = "auto";
};

// On rank 0 (`root`), prints to stderr a note naming the figures of the plan's recorded
// prediction that its experiment no longer gives (planner::prediction_mismatch): a hand-edited
// plan still runs, and run compares against the prediction it makes itself, but what the file
// says it predicted is then not what runs (run_step.cpp).
void note_prediction_mismatch(const planner::PlanFile& plan, bool root);

// `ringplan run --scope step` on the world communicator (run_step.cpp).
int run_step_body(const RunArgs& a, runtime::MpiCommunicator& world);

}  // namespace ringplan::cli
