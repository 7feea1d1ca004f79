#!/usr/bin/env bash
# Fails when a doctest case name contains ';'. doctest_discover_tests turns each case into a CTest
# entry whose name and --test-case filter are CMake strings, and CMake splits them at ';': such a
# case becomes two entries whose filters match no case, so both "pass" without running anything.
# usage: test_case_names.sh TESTS_DIR
set -euo pipefail
dir=${1:?usage: test_case_names.sh TESTS_DIR}
bad=$(grep -rn --include='*.cpp' -E 'TEST_CASE\("[^"]*;' "$dir" || true)
if [ -n "$bad" ]; then
  echo "doctest case names with ';' (CTest would split them and run nothing; use ',' instead):"
  echo "$bad"
  exit 1
fi
echo "no doctest case name contains ';' ($(grep -rho --include='*.cpp' -E 'TEST_CASE\("' "$dir" | wc -l) cases checked)"
