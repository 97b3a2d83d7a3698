# Builds and runs tests/consumer against quant (cmake -P script, run by ctest).
#   -DMODE=find_package|add_subdirectory -DQUANT_SOURCE=<quant source> -DWORK=<scratch dir>
#   [-DGENERATOR=<cmake generator>]
# find_package: configure quant alone (no tests/benchmarks/examples), `cmake --install` it
# into WORK/prefix, then configure the consumer with CMAKE_PREFIX_PATH=WORK/prefix.
# add_subdirectory: configure the consumer with QUANT_SOURCE_DIR=QUANT_SOURCE.
foreach(var MODE QUANT_SOURCE WORK)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT GENERATOR)
  set(GENERATOR "Unix Makefiles")
endif()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(consumer_args -DQUANT_CONSUMER_MODE=${MODE} -DCMAKE_BUILD_TYPE=Release)

if(MODE STREQUAL "find_package")
  set(prefix ${WORK}/prefix)
  run(${CMAKE_COMMAND} -S ${QUANT_SOURCE} -B ${WORK}/quant-build -G ${GENERATOR} -DCMAKE_INSTALL_PREFIX=${prefix}
      -DQUANT_BUILD_TESTS=OFF -DQUANT_BUILD_BENCHMARKS=OFF -DQUANT_BUILD_EXAMPLES=OFF)
  run(${CMAKE_COMMAND} --install ${WORK}/quant-build)
  if(NOT EXISTS ${prefix}/include/quant/uniform.hpp)
    message(FATAL_ERROR "the install did not place include/quant/uniform.hpp under ${prefix}")
  endif()
  file(GLOB_RECURSE config ${prefix}/*/quantConfig.cmake)
  if(NOT config)
    message(FATAL_ERROR "the install did not place quantConfig.cmake under ${prefix}")
  endif()
  list(APPEND consumer_args -DCMAKE_PREFIX_PATH=${prefix})
elseif(MODE STREQUAL "add_subdirectory")
  list(APPEND consumer_args -DQUANT_SOURCE_DIR=${QUANT_SOURCE})
else()
  message(FATAL_ERROR "MODE must be find_package or add_subdirectory, not '${MODE}'")
endif()

run(${CMAKE_COMMAND} -S ${CMAKE_CURRENT_LIST_DIR} -B ${WORK}/consumer-build -G ${GENERATOR} ${consumer_args})
run(${CMAKE_COMMAND} --build ${WORK}/consumer-build)
run(${WORK}/consumer-build/consumer)
