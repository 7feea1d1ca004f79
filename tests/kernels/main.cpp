// doctest main of the kernels tests (one executable for the whole area).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
