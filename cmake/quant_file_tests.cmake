# quant_add_file_tests(<target> <batch> <out_targets> <sources...>)
#
# One ctest test per test file, named after the file. With QUANT_TEST_UNITY (the default)
# the files are compiled <batch> at a time (CMake's unity build; 0: all in one) into one executable,
# <target>, and each ctest test runs it on its own file's test cases: Catch2 tags every test
# case with its file (`-#`), so `<target> "-#" "[#test_uniform]"` selects test_uniform.cpp's.
# The instantiations the files of a batch share are then compiled once instead of once per
# file. One more test, <target>_selects_every_case, fails if a test case carries a file tag
# that no ctest test selects (a TEST_CASE written in a header would otherwise never run).
# With QUANT_TEST_UNITY=OFF every file is its own executable named after it, compiled alone.
# Every executable links Catch2's main, uses the tests' precompiled header
# (cmake/quant_test_pch.cmake) and is part of quant_test_suite (the top-level CMakeLists.txt);
# <out_targets> receives them, for the caller's other settings.
#
# Test cases tagged [long] run an algorithm at full size to check a claim about its quality
# (it beats a baseline, a search reaches the brute-force optimum). QUANT_TEST_SKIP_LONG=ON
# leaves them out of the ctest tests (Catch2 filter ~[long]): CI's sanitizer build, where
# they take minutes at -O0 and their code paths are covered at small sizes by other cases.
option(QUANT_TEST_UNITY "Test build: compile the test files in batches into one executable" ON)
option(QUANT_TEST_SKIP_LONG "Test build: ctest skips the test cases tagged [long]" OFF)
find_package(Catch2 REQUIRED)  # imported targets are per directory: found again by each includer
include(${CMAKE_CURRENT_LIST_DIR}/quant_test_pch.cmake)

function(quant_add_file_tests target batch out_targets)
  set(targets "")
  set(skip "")
  if(QUANT_TEST_SKIP_LONG)
    set(skip "~[long]")
  endif()
  if(QUANT_TEST_UNITY)
    add_executable(${target} ${ARGN})
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE ${batch})
    set(names "")
    foreach(src ${ARGN})
      get_filename_component(name ${src} NAME_WE)
      list(APPEND names ${name})
      add_test(NAME ${name} COMMAND ${target} "-#" "[#${name}]${skip}")
    endforeach()
    string(REPLACE ";" "," names "${names}")
    add_test(NAME ${target}_selects_every_case
             COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:${target}> -DNAMES=${names} -P ${PROJECT_SOURCE_DIR}/cmake/quant_file_tests_check.cmake)
    list(APPEND targets ${target})
  else()
    foreach(src ${ARGN})
      get_filename_component(name ${src} NAME_WE)
      add_executable(${name} ${src})
      add_test(NAME ${name} COMMAND ${name} ${skip})
      list(APPEND targets ${name})
    endforeach()
  endif()
  foreach(t ${targets})
    target_link_libraries(${t} PRIVATE Catch2::Catch2WithMain)
    quant_use_test_pch(${t})
    add_dependencies(quant_test_suite ${t})
  endforeach()
  set(${out_targets} ${targets} PARENT_SCOPE)
endfunction()
