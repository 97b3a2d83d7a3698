// quant/observers.hpp — range setting (docs/observers.md): every observer and the
// one-shot calibrate_* functions. Each observer streams (update), merges, saves/loads a
// small versioned text format, and turns its statistics into validated qparams with
// compute(grid, scheme, symmetric_scale_convention).
//
//   range/minmax.hpp      minmax_observer, moving_average_minmax_observer, calibrate_minmax
//   range/mse.hpp         kernels::lp_error (fused), lp_search, mse_observer, calibrate_mse
//   range/percentile.hpp  percentile_observer (exact, linear interpolation)
//   range/histogram.hpp   histogram_observer (PyTorch HistogramObserver L2 search),
//                         sqnr_observer (AIMET tf_enhanced)
#pragma once

#include "range/minmax.hpp"
#include "range/mse.hpp"
#include "range/percentile.hpp"
#include "range/histogram.hpp"
