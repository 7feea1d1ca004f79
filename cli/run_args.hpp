// Arguments of `ringplan run`, shared by its two scopes (cmd_run.cpp: one attention layer;
// run_step.cpp: whole training steps).
#pragma once
#include <string>

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

// `ringplan run --scope step` on the world communicator (run_step.cpp).
int run_step_body(const RunArgs& a, runtime::MpiCommunicator& world);

}  // namespace ringplan::cli
