// MPI bootstrap of the NCCL communicator: the unique id goes from rank 0 to every rank with
// MPI_Bcast (as nccl-tests do), host names with MPI_Allgather, and a fault stops the whole job
// with MPI_Abort. The MPI communicator must stay valid while NcclCommunicator::create runs.
//
//   auto mpi = ringplan::runtime::MpiCommunicator::world();
//   auto nccl = ringplan::runtime::NcclCommunicator::create(
//       ringplan::runtime::mpi_bootstrap(mpi->comm()), ringplan::runtime::mpi_local_rank(mpi->comm()) % ngpus,
//       stream, mpi->timeout_s());
#pragma once
#include <mpi.h>

#include "runtime/nccl/nccl_communicator.hpp"

namespace ringplan::runtime {

NcclBootstrap mpi_bootstrap(MPI_Comm comm);
// Rank among the processes of this node (MPI_COMM_TYPE_SHARED): picks the GPU of a rank.
int mpi_local_rank(MPI_Comm comm);

}  // namespace ringplan::runtime
