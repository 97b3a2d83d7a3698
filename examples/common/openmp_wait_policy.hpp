// examples/common/openmp_wait_policy.hpp — the quant tool and the demo start with idle
// OpenMP workers that sleep instead of spinning (docs/threading.md).
//
// libgomp's default wait policy keeps each idle worker spinning for a while after every
// parallel region; OpenBLAS (pthreads) runs its own threads. When an application alternates
// quant's threaded passes with BLAS calls, the spinning workers take the cores the BLAS
// threads need and the other way round (AdaRound on W [256, 1152]: 3 to 4x slower than with
// OMP_WAIT_POLICY=passive on 2 cores). libgomp reads OMP_WAIT_POLICY once, when it is loaded
// (before main), so a program can only change it for itself by starting again.
#pragma once

#include <cstdlib>

#if defined(__linux__)
#include <unistd.h>
#endif

namespace examples {

// Call first thing in main(). If neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT is set, sets
// OMP_WAIT_POLICY=passive and re-executes the program with the same arguments (Linux,
// OpenMP builds; /proc/self/exe). Returns without doing anything when either variable is
// set (the user's choice wins, and the re-executed program sees it set), on other systems,
// or if the re-execution fails (the program then runs with the default policy).
inline void use_passive_openmp_waits(char** argv) noexcept {
#if defined(__linux__) && defined(_OPENMP)
  if (std::getenv("OMP_WAIT_POLICY") != nullptr || std::getenv("GOMP_SPINCOUNT") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "passive", 0) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("OMP_WAIT_POLICY");  // exec failed: leave the environment as it was
#else
  (void)argv;
#endif
}

}  // namespace examples
