# One precompiled header for every test executable: Catch2 and the xtensor headers nearly
# every test includes, compiled once per build instead of parsed again by each test file.
# The quant headers stay out of it, so each test still compiles the header it tests.
# Tests opt in with quant_use_test_pch(<target>); GCC uses the PCH only where the flags
# match the ones it was built with and otherwise reads the headers as text (same result).
#
# The tests, and so their PCH, compile at -O2 where the build type's flags say -O3
# (Release): -O3 costs them about a quarter more compile time (one batch of 12 test files,
# g++ 12: 99 s CPU against 79 s), and no result may depend on the level. That the -O3 code
# gives the same bits is kernel_digest's check (tests/tools): it keeps the build type's
# flags, and CI compares its digests with those of -O1 and clang builds. The benchmarks keep
# -O3 as well. Other levels (-O1, -O0, a Debug build) are left as they are.
option(QUANT_TEST_PCH "Test build: one precompiled header (Catch2, xtensor) shared by the tests" ON)
function(quant_test_optimization target)
  if(CMAKE_CXX_FLAGS_RELEASE MATCHES "(^| )-O3( |$)")
    target_compile_options(${target} PRIVATE $<$<CONFIG:Release>:-O2>)
  endif()
endfunction()
if(QUANT_TEST_PCH AND NOT TARGET quant_test_pch)
  find_package(Catch2 REQUIRED)
  # The PCH needs a target to build it; its one (empty) source is generated.
  file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/quant_test_pch.cpp CONTENT "// builds the tests' PCH\n")
  add_library(quant_test_pch OBJECT ${CMAKE_CURRENT_BINARY_DIR}/quant_test_pch.cpp)
  target_link_libraries(quant_test_pch PRIVATE quant::quant quant_build_flags Catch2::Catch2)
  quant_test_optimization(quant_test_pch)
  target_precompile_headers(quant_test_pch PRIVATE
    <algorithm> <cmath> <cstdint> <random> <sstream> <string> <vector>
    <catch2/catch.hpp>
    <xtensor/xadapt.hpp> <xtensor/xarray.hpp> <xtensor/xbuilder.hpp> <xtensor/xmath.hpp>
    <xtensor/xtensor.hpp> <xtensor/xview.hpp>)
endif()

# Every test executable calls it: the PCH and the -O2 cap go together.
function(quant_use_test_pch target)
  quant_test_optimization(${target})
  if(QUANT_TEST_PCH)
    target_precompile_headers(${target} REUSE_FROM quant_test_pch)
  endif()
endfunction()
