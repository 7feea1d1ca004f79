# One INTERFACE target carries warnings and sanitizer flags; every project target links it.
add_library(ringplan_warnings INTERFACE)
target_compile_options(ringplan_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wno-unused-parameter>)
target_include_directories(ringplan_warnings INTERFACE ${PROJECT_SOURCE_DIR})

if(RINGPLAN_SANITIZE)
  target_compile_options(ringplan_warnings INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined>)
  target_link_options(ringplan_warnings INTERFACE -fsanitize=address,undefined)
endif()
