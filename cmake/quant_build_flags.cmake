# Flags for quant's own tests, benchmarks and examples (never the installed interface).
# -ffp-contract=off: no compiler-made FMA, so SIMD and scalar paths compute the same
# roundings and can be compared bit for bit.
add_library(quant_build_flags INTERFACE)
target_compile_options(quant_build_flags INTERFACE -Wall -Wextra -ffp-contract=off
                                                   $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
# QUANT_ARCH_FLAGS picks the instruction set of a SIMD build: -march=native by default;
# e.g. "-mavx2 -mfma" for an AVX2-only build on an AVX-512 machine (the kernels then take
# their AVX2 paths), to check that both give the same bits (scripts/compare-digests.sh).
set(QUANT_ARCH_FLAGS "-march=native" CACHE STRING "SIMD build: instruction-set flags (-march=native, -mavx2 -mfma, ...)")
if(QUANT_SIMD)
  target_compile_definitions(quant_build_flags INTERFACE XTENSOR_USE_XSIMD)
  separate_arguments(quant_arch_flags UNIX_COMMAND "${QUANT_ARCH_FLAGS}")
  target_compile_options(quant_build_flags INTERFACE ${quant_arch_flags})
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
