// The doctest entry point of every test executable that needs no start-up of its own (the MPI
// tests in tests/runtime set up MPI before doctest runs and keep their own main). Built once as
// the object library ringplan_doctest_main (tests/CMakeLists.txt), which those executables link.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
