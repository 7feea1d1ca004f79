// Mesh process groups for (DP, TP, CP, PP). Rank order, innermost first (DESIGN.md "Mesh"):
//   rank = tp + TP*(cp + CP*(dp + DP*pp))
// so TP groups are the closest ranks, then CP. Each group communicator is a split of the
// world by the other three coordinates, ordered by the group's own coordinate, so a rank's
// index inside its CP group IS its cp coordinate (the ring order).
#pragma once
#include <cstdint>
#include <memory>

#include "core/config.hpp"
#include "runtime/communicator.hpp"

namespace ringplan::runtime {

struct MeshCoord {
  int64_t tp = 0, cp = 0, dp = 0, pp = 0;
  bool operator==(const MeshCoord&) const = default;
};

// Pure index math (no communication); throws bad_input when rank is outside [0, world).
MeshCoord mesh_coord(const Mesh& mesh, int64_t rank);
int64_t mesh_rank(const Mesh& mesh, const MeshCoord& c);

// Checks that the world size equals DP*TP*CP*PP; throws bad_input naming both otherwise.
void check_world_size(const Mesh& mesh, int world_size);

struct MeshGroups {
  Mesh mesh;
  MeshCoord coord;                      // of this rank
  std::unique_ptr<Communicator> tp, cp, dp, pp;
};

// Collective over `world`: every rank must call it with the same mesh.
MeshGroups make_mesh_groups(Communicator& world, const Mesh& mesh);

}  // namespace ringplan::runtime
