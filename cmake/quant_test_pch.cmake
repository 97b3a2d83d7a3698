# One precompiled header for every test executable: Catch2 and the xtensor headers nearly
# every test includes, compiled once per build instead of parsed again by each test file.
# The quant headers stay out of it, so each test still compiles the header it tests.
# Tests opt in with quant_use_test_pch(<target>); GCC uses the PCH only where the flags
# match the ones it was built with and otherwise reads the headers as text (same result).
option(QUANT_TEST_PCH "Test build: one precompiled header (Catch2, xtensor) shared by the tests" ON)
if(QUANT_TEST_PCH AND NOT TARGET quant_test_pch)
  find_package(Catch2 REQUIRED)
  # The PCH needs a target to build it; its one (empty) source is generated.
  file(CONFIGURE OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/quant_test_pch.cpp CONTENT "// builds the tests' PCH\n")
  add_library(quant_test_pch OBJECT ${CMAKE_CURRENT_BINARY_DIR}/quant_test_pch.cpp)
  target_link_libraries(quant_test_pch PRIVATE quant::quant quant_build_flags Catch2::Catch2)
  target_precompile_headers(quant_test_pch PRIVATE
    <algorithm> <cmath> <cstdint> <random> <sstream> <string> <vector>
    <catch2/catch.hpp>
    <xtensor/xadapt.hpp> <xtensor/xarray.hpp> <xtensor/xbuilder.hpp> <xtensor/xmath.hpp>
    <xtensor/xtensor.hpp> <xtensor/xview.hpp>)
endif()

function(quant_use_test_pch target)
  if(QUANT_TEST_PCH)
    target_precompile_headers(${target} REUSE_FROM quant_test_pch)
  endif()
endfunction()
