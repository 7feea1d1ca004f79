// MPI bootstrap of the NCCL communicator; see nccl_mpi_bootstrap.hpp.
#include "runtime/nccl/nccl_mpi_bootstrap.hpp"

#include <cstdio>
#include <string>

#include "core/error.hpp"

namespace ringplan::runtime {
namespace {

void check_mpi(int rc, const char* call) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING] = {};
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw Error(ErrorKind::runtime, std::string("NCCL bootstrap: ") + call + " failed: " + msg);
  }
}

}  // namespace

NcclBootstrap mpi_bootstrap(MPI_Comm comm) {
  NcclBootstrap b;
  check_mpi(MPI_Comm_rank(comm, &b.rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm, &b.size), "MPI_Comm_size");
  b.broadcast_from_root = [comm](void* data, size_t bytes) {
    check_mpi(MPI_Bcast(data, int(bytes), MPI_BYTE, 0, comm), "MPI_Bcast(ncclUniqueId)");
  };
  b.all_gather = [comm](const void* send, void* recv, size_t bytes) {
    check_mpi(MPI_Allgather(send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE, comm), "MPI_Allgather(hosts)");
  };
  b.abort_job = [comm](const std::string& why) {
    std::fprintf(stderr, "ringplan: MPI_Abort: %s\n", why.c_str());
    std::fflush(stderr);
    MPI_Abort(comm, 1);
  };
  return b;
}

int mpi_local_rank(MPI_Comm comm) {
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  int r = 0;
  MPI_Comm_rank(node, &r);
  MPI_Comm_free(&node);
  return r;
}

}  // namespace ringplan::runtime
