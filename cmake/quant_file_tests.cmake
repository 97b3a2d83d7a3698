# quant_add_file_tests(<target> <batch> <out_targets> <sources...>)
#
# One ctest test per test file, named after the file. With QUANT_TEST_UNITY (the default)
# the files are compiled <batch> at a time (CMake's unity build) into one executable,
# <target>, and each ctest test runs it on its own file's test cases: Catch2 tags every test
# case with its file (`-#`), so `<target> "-#" "[#test_uniform]"` selects test_uniform.cpp's.
# The instantiations the files of a batch share are then compiled once instead of once per
# file. One more test, <target>_selects_every_case, fails if a test case carries a file tag
# that no ctest test selects (a TEST_CASE written in a header would otherwise never run).
# With QUANT_TEST_UNITY=OFF every file is its own executable named after it, compiled alone.
# <out_targets> receives the executables, for the caller's link settings.
option(QUANT_TEST_UNITY "Test build: compile the test files in batches into one executable" ON)

function(quant_add_file_tests target batch out_targets)
  set(targets "")
  if(QUANT_TEST_UNITY)
    add_executable(${target} ${ARGN})
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE ${batch})
    set(names "")
    foreach(src ${ARGN})
      get_filename_component(name ${src} NAME_WE)
      list(APPEND names ${name})
      add_test(NAME ${name} COMMAND ${target} "-#" "[#${name}]")
    endforeach()
    string(REPLACE ";" "," names "${names}")
    add_test(NAME ${target}_selects_every_case
             COMMAND ${CMAKE_COMMAND} -DEXE=$<TARGET_FILE:${target}> -DNAMES=${names} -P ${PROJECT_SOURCE_DIR}/cmake/quant_file_tests_check.cmake)
    list(APPEND targets ${target})
  else()
    foreach(src ${ARGN})
      get_filename_component(name ${src} NAME_WE)
      add_executable(${name} ${src})
      add_test(NAME ${name} COMMAND ${name})
      list(APPEND targets ${name})
    endforeach()
  endif()
  set(${out_targets} ${targets} PARENT_SCOPE)
endfunction()
