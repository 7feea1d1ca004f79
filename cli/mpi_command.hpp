// Shared start-up and error policy of the commands that run under mpirun (run, calibrate).
#pragma once
#include <exception>
#include <functional>
#include <string>

#include "core/error.hpp"
#include "runtime/mpi_communicator.hpp"

namespace ringplan::cli {

// Initialises MPI, applies the fault timeout (seconds; <= 0 keeps the default) and runs `body`
// on the world communicator.
// Bad input is detected identically on every rank before any communication: rank 0 alone
// reports it (rethrows: main exits 2) and every other rank returns 2 quietly. A runtime
// failure may strike one rank only, and the others would wait for it forever: abort the job.
inline int run_under_mpi(double timeout_s, const std::function<int(runtime::MpiCommunicator&)>& body) {
  runtime::MpiSession mpi(nullptr, nullptr);
  auto world = runtime::MpiCommunicator::world();
  if (timeout_s > 0) world->set_timeout_s(timeout_s);
  try {
    return body(*world);
  } catch (const Error& err) {
    if (err.kind() == ErrorKind::bad_input) {
      if (world->rank() != 0) return 2;
      throw;
    }
    world->abort(err.what());
  } catch (const std::exception& err) {
    world->abort(std::string("internal error: ") + err.what());
  }
}

}  // namespace ringplan::cli
