// doctest entry point of test_sim (every TEST_CASE is also its own CTest entry).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
