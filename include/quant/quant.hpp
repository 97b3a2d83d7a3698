// quant/quant.hpp — convenience umbrella: every public header of quant.
//
// For users only; quant's own headers never include it. Parsing all of it (with
// xtensor-blas for the GEMM-based algorithms) costs a few seconds per translation unit:
// include the one-concept headers you use instead where build time matters.
// Headers marked [BLAS] need the quant::blas CMake target (xtensor-blas + a BLAS).
#pragma once

#include "config.hpp"
#include "error.hpp"
#include "parallel.hpp"        // set_num_threads, num_threads, parallel_for
#include "qparams.hpp"
#include "rounding.hpp"
#include "uniform.hpp"         // quantize / dequantize / fake_quantize
#include "ste.hpp"             // straight-through backward
#include "observers.hpp"       // range setting
#include "lsq.hpp"             // LSQ / LSQ+
#include "export.hpp"          // integer export, packed int4
#include "optim.hpp"           // Adam, SGD
#include "kurtosis.hpp"        // KURE
#include "quant_noise.hpp"     // Quant-Noise
#include "kmeans.hpp"          // k-means [BLAS]
#include "pq.hpp"              // product quantization, iPQ [BLAS]
#include "im2col.hpp"          // conv lowering
#include "packed_weights.hpp"  // int8 / int4 weights packed for the integer GEMM
#include "integer_gemm.hpp"    // int8 / int4 GEMM, exact int32 accumulation, fused requantization
#include "integer_im2col.hpp"  // im2col of quantized activations, padded with the zero point
#include "adaround.hpp"        // AdaRound [BLAS]
#include "reconstruction.hpp"  // BRECQ / QDrop [BLAS]
#include "hessian.hpp"       // layer Hessian accumulator 2 X^T X / n [BLAS]
#include "gptq.hpp"          // GPTQ [BLAS, LAPACK]
#include "batchnorm_folding.hpp"  // BN folding
#include "equalization.hpp"       // cross-layer equalization
#include "bias_absorption.hpp"    // high-bias absorption
#include "bias_correction.hpp"    // empirical / analytic bias correction
