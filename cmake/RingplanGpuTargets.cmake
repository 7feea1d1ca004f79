# The GPU path's targets, kept in one list: each is registered where it is defined, with
# ringplan_gpu_target(NAME...); after every folder is added, ringplan_gpu_targets_finish() (top
# CMakeLists.txt) makes `ringplan_gpu` depend on all of them and writes the executables among
# them, one name a line in registration order, to <build>/gpu_executables.txt. That file is the
# list scripts/packaging/make_bundle.sh bundles by default and carries into the bundle, where
# bench/device_check.sh reads which GPU test binaries to run (the names starting with test_).
function(ringplan_gpu_target)
  set_property(GLOBAL APPEND PROPERTY RINGPLAN_GPU_TARGETS ${ARGN})
endfunction()

function(ringplan_gpu_targets_finish)
  get_property(targets GLOBAL PROPERTY RINGPLAN_GPU_TARGETS)
  add_custom_target(ringplan_gpu)
  set(exes)
  foreach(t IN LISTS targets)
    add_dependencies(ringplan_gpu ${t})
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "EXECUTABLE")
      list(APPEND exes ${t})
    endif()
  endforeach()
  list(JOIN exes "\n" text)
  file(CONFIGURE OUTPUT ${CMAKE_BINARY_DIR}/gpu_executables.txt CONTENT "${text}\n")
endfunction()
