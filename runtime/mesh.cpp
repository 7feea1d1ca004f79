#include "runtime/mesh.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

namespace ringplan::runtime {

MeshCoord mesh_coord(const Mesh& mesh, int64_t rank) {
  if (mesh.tp < 1 || mesh.cp < 1 || mesh.dp < 1 || mesh.pp < 1)
    throw bad_input(fmt::format("mesh dp={} tp={} cp={} pp={}: every size must be >= 1", mesh.dp, mesh.tp, mesh.cp, mesh.pp));
  if (rank < 0 || rank >= mesh.world_size())
    throw bad_input(fmt::format("rank {} is outside the mesh's world 0..{}", rank, mesh.world_size() - 1));
  MeshCoord c;
  c.tp = rank % mesh.tp;
  rank /= mesh.tp;
  c.cp = rank % mesh.cp;
  rank /= mesh.cp;
  c.dp = rank % mesh.dp;
  c.pp = rank / mesh.dp;
  return c;
}

int64_t mesh_rank(const Mesh& mesh, const MeshCoord& c) {
  return c.tp + mesh.tp * (c.cp + mesh.cp * (c.dp + mesh.dp * c.pp));
}

void check_world_size(const Mesh& mesh, int world_size) {
  if (mesh.world_size() != world_size)
    throw bad_input(fmt::format("mesh dp={} tp={} cp={} pp={} needs {} ranks but the job has {}; run mpirun -np {}",
                                mesh.dp, mesh.tp, mesh.cp, mesh.pp, mesh.world_size(), world_size, mesh.world_size()));
}

MeshGroups make_mesh_groups(Communicator& world, const Mesh& mesh) {
  check_world_size(mesh, world.size());
  MeshGroups g;
  g.mesh = mesh;
  g.coord = mesh_coord(mesh, world.rank());
  const MeshCoord& c = g.coord;
  // Colour = the rank with this dimension's coordinate zeroed: equal for exactly the ranks
  // that differ only in this dimension. Key = the coordinate, so group rank == coordinate.
  auto color_without = [&](MeshCoord x, int64_t MeshCoord::*dim) {
    x.*dim = 0;
    return static_cast<int>(mesh_rank(mesh, x));
  };
  g.tp = world.split(color_without(c, &MeshCoord::tp), static_cast<int>(c.tp));
  g.cp = world.split(color_without(c, &MeshCoord::cp), static_cast<int>(c.cp));
  g.dp = world.split(color_without(c, &MeshCoord::dp), static_cast<int>(c.dp));
  g.pp = world.split(color_without(c, &MeshCoord::pp), static_cast<int>(c.pp));
  return g;
}

}  // namespace ringplan::runtime
