# Flags for quant's own tests, benchmarks and examples (never the installed interface).
# -ffp-contract=off: no compiler-made FMA, so SIMD and scalar paths compute the same
# roundings and can be compared bit for bit.
add_library(quant_build_flags INTERFACE)
target_compile_options(quant_build_flags INTERFACE -Wall -Wextra -Wno-maybe-uninitialized -ffp-contract=off)
if(QUANT_SIMD)
  target_compile_definitions(quant_build_flags INTERFACE XTENSOR_USE_XSIMD)
  target_compile_options(quant_build_flags INTERFACE -march=native)
else()
  target_compile_definitions(quant_build_flags INTERFACE QUANT_NO_SIMD)
endif()
if(QUANT_OPENMP)
  find_package(OpenMP)
  if(OpenMP_CXX_FOUND)
    target_link_libraries(quant_build_flags INTERFACE OpenMP::OpenMP_CXX)
  endif()
endif()
if(QUANT_SANITIZE)
  target_compile_options(quant_build_flags INTERFACE -fsanitize=address,undefined -fno-sanitize-recover=all
                                                     -fno-omit-frame-pointer)
  target_link_options(quant_build_flags INTERFACE -fsanitize=address,undefined)
endif()
