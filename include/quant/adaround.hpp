// quant/adaround.hpp — AdaRound: learn, per weight, whether to round up or down so that the
// layer *output* is reconstructed (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
// Post-Training Quantization"; docs/adaround.md).
//
//   soft weight   W_soft = s (clamp(floor(W/s) + h(V) + z, qmin, qmax) - z),
//                 h(V) = clamp(sigmoid(V) (zeta - gamma) + gamma, 0, 1)
//   objective     L = (1/B) sum_b ||f_a(W x_b + bias) - f_a(W_soft x_hat_b + bias)||^2
//                     + lambda sum(1 - |2 h(V) - 1|^beta)
//   result        q = clamp(floor(W/s) + 1[V >= 0] + z, qmin, qmax)
//
// This header includes the whole family; each part can be included alone:
//   adaround/rounding.hpp          h, soft / hard weights, the regularizer (lazy primitives);
//                                  eager::adaround_init and the other eager entry points
//   adaround/fused_step.hpp        kernels::adaround_fused_step: one iteration's pass over V
//   adaround/variables.hpp         adaround_variables: V, Adam state and soft weight of one
//                                  tensor (with the two above: the BLAS-free core)
//   adaround/schedule.hpp          adaround_schedule (warm-up, beta annealing), adaround_progress
//   adaround/layer.hpp             adaround_options, adaround_optimizer, adaround_layer (BLAS)
//   adaround/progress_printer.hpp  adaround_progress_printer (iostreams)
#pragma once

#include "adaround/fused_step.hpp"
#include "adaround/layer.hpp"
#include "adaround/progress_printer.hpp"
#include "adaround/rounding.hpp"
#include "adaround/schedule.hpp"
#include "adaround/variables.hpp"
