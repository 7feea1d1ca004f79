# Sourced by the scripts: lets mpirun start more ranks than cores and run as root
# (containers, CI). Harmless for a normal user.
export OMPI_ALLOW_RUN_AS_ROOT=1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
# Loopback/shared memory only: no network interfaces are probed on a single machine.
export OMPI_MCA_btl="self,vader,tcp"
export OMPI_MCA_btl_tcp_if_include="lo"
export OMPI_MCA_oob_tcp_if_include="lo"
