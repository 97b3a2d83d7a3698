// examples/common/single_threaded_blas.hpp — pin OpenBLAS to one thread.
//
// OpenBLAS splits a GEMM differently for different thread counts, and the split changes the
// summation order: with one BLAS thread, results are the same on every machine with the same
// BLAS kernels. The demo and the model runner parallelize over samples themselves, so BLAS
// threads would only oversubscribe the cores. Looked up at run time (dlsym) so any other BLAS
// still links; with another BLAS this does nothing.
#pragma once

#include <dlfcn.h>

namespace examples {

inline void use_single_threaded_blas() {
  using set_threads_fn = void (*)(int);
  if (auto f = reinterpret_cast<set_threads_fn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(1);
}

}  // namespace examples
