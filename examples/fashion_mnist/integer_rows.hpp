// examples/fashion_mnist/integer_rows.hpp — the rows of the demo's table that put the integer
// model beside its simulations (docs/integer_execution.md, "The proof on the demo's networks").
// For a trained network as a model bundle, a row computes in-process what
// scripts/integer_proof.sh runs through the `quant` tool:
//   quant ptq    --weight-bits W --act-bits 8 --weight-granularity per-channel
//                (BN folded, min-max observers, nearest rounding: symmetric per-channel weights,
//                asymmetric per-tensor 8-bit activations at the input of every weight layer)
//   quant export --weight-format int8, or int4 for W <= 4 (fixed-point requantization)
//   quant run    --check-exact   on the test images (batch 256)
// The row's accuracy is the integer run's top-1. Its note gives the top-1 of the plain float
// simulation (run_model on the quantized bundle, = quant eval) and of the exact simulation,
// and how many predictions, logits (bitwise) and 8-bit activations (the output of every op
// before the last weight layer, the quantized input included) differ between the integer run
// and the exact simulation. Any difference starts the note with "MISMATCH", is printed on
// stderr and sets the row's check_failure, so --check fails.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/integer_model.hpp"
#include "../common/model_runner.hpp"
#include "../common/ptq_pipeline.hpp"
#include "report.hpp"
#include "trainer.hpp"

namespace examples {

// The integer run against the exact simulation on one data set.
struct integer_check {
  double integer_accuracy = 0.0, exact_accuracy = 0.0;  // top-1, fractions
  std::size_t samples = 0, logits = 0, activations = 0;  // values compared
  std::size_t prediction_mismatches = 0, logit_mismatches = 0, activation_mismatches = 0;
  double integer_seconds = 0.0, exact_seconds = 0.0;
  std::size_t mismatches() const { return prediction_mismatches + logit_mismatches + activation_mismatches; }
};

// Runs `im` on x [N, ...input_shape] with integer_mode::integer and ::exact_simulation,
// `batch` samples per chunk, and compares everything both record. The samples go through in
// slices of slice_batches * batch (bounding the recorded activations' memory); slices start
// at multiples of `batch`, so the chunks are those of a single run_integer_model call.
inline integer_check check_integer_model(const integer_model& im, const xt::xarray<float>& x,
                                         const std::vector<std::int64_t>& labels, std::size_t batch = 256,
                                         std::size_t slice_batches = 4) {
  if (batch == 0 || slice_batches == 0)
    throw std::invalid_argument("check_integer_model: batch = " + std::to_string(batch) +
                                ", slice_batches = " + std::to_string(slice_batches) + ": both must be positive");
  const std::size_t N = x.shape()[0], in_size = N ? x.size() / N : 0, slice = batch * slice_batches;
  if (labels.size() != N)
    throw std::length_error("check_integer_model: " + std::to_string(N) + " samples, " + std::to_string(labels.size()) +
                            " labels");
  integer_check c;
  c.samples = N;
  std::size_t integer_correct = 0, exact_correct = 0;
  std::vector<std::size_t> shape(x.shape().begin(), x.shape().end());
  for (std::size_t b = 0; b < N; b += slice) {
    const std::size_t n = std::min(slice, N - b);
    shape[0] = n;
    xt::xarray<float> xs = xt::xarray<float>::from_shape(shape);
    std::copy(x.data() + b * in_size, x.data() + (b + n) * in_size, xs.data());
    auto timed = [&](integer_mode mode, double& seconds) {
      const auto t0 = std::chrono::steady_clock::now();
      integer_run_result r = run_integer_model(im, xs, mode, true, batch);
      seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return r;
    };
    const integer_run_result a = timed(integer_mode::integer, c.integer_seconds);
    const integer_run_result e = timed(integer_mode::exact_simulation, c.exact_seconds);
    for (std::size_t k = 0; k < a.activations.size(); ++k) {
      const std::uint8_t *p = a.activations[k].data(), *q = e.activations[k].data();
      for (std::size_t i = 0; i < a.activations[k].size(); ++i) c.activation_mismatches += p[i] != q[i];
      c.activations += a.activations[k].size();
    }
    for (std::size_t i = 0; i < a.logits.size(); ++i)
      c.logit_mismatches += std::memcmp(a.logits.data() + i, e.logits.data() + i, sizeof(float)) != 0;
    c.logits += a.logits.size();
    const std::vector<std::size_t> pa = top1(a.logits), pe = top1(e.logits);
    for (std::size_t i = 0; i < n; ++i) {
      c.prediction_mismatches += pa[i] != pe[i];
      integer_correct += static_cast<std::int64_t>(pa[i]) == labels[b + i];
      exact_correct += static_cast<std::int64_t>(pe[i]) == labels[b + i];
    }
  }
  if (N) {
    c.integer_accuracy = static_cast<double>(integer_correct) / static_cast<double>(N);
    c.exact_accuracy = static_cast<double>(exact_correct) / static_cast<double>(N);
  }
  return c;
}

inline std::string count_text(std::size_t n) {
  char buf[32];
  if (n >= 1000000)
    std::snprintf(buf, sizeof buf, "%.2f M", static_cast<double>(n) / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%zu", n);
  return buf;
}

// One row: `fp32` (a trained network as a bundle) quantized at W`wbits`A8 on `calib_x`,
// exported, run on `test`. `model_name` only labels the lines on stderr.
inline result_row integer_proof_row(const std::string& model_name, const model& fp32, const xt::xarray<float>& calib_x,
                                    const nchw_split& test, int wbits) {
  using clock = std::chrono::steady_clock;
  auto since = [](clock::time_point t) { return std::chrono::duration<double>(clock::now() - t).count(); };
  const std::string label = "W" + std::to_string(wbits) + "A8";
  ptq_options o;
  o.weight_bits = wbits;
  o.act_bits = 8;
  o.per_channel = true;
  auto t = clock::now();
  const ptq_result q = run_ptq(fp32, calib_x, o);
  const double ptq_seconds = since(t);
  t = clock::now();
  run_options ro;
  ro.batch = o.batch;
  const double float_sim = top1_accuracy(run_model(q.quantized, test.x, ro), test.labels);
  const double float_seconds = since(t);
  const integer_model im = make_integer_model(q.quantized, quant::requantization::fixed_point,
                                              wbits <= 4 ? weight_format::int4 : weight_format::int8);
  const integer_check c = check_integer_model(im, test.x, test.labels, o.batch);
  std::fprintf(stderr, "integer %s %s: ptq %.2f s, float simulation %.2f s, integer run %.2f s, exact simulation %.2f s\n",
               model_name.c_str(), label.c_str(), ptq_seconds, float_seconds, c.integer_seconds, c.exact_seconds);

  result_row r;
  r.method = r.series = "integer per-channel";
  r.wbits = wbits;
  r.abits = 8;
  r.accuracy = c.integer_accuracy;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "float sim %.2f %%, exact sim %.2f %%, mismatches %zu/%zu/%zu (predictions/logits/8-bit activations, "
                "of %zu/%zu/%s)",
                100.0 * float_sim, 100.0 * c.exact_accuracy, c.prediction_mismatches, c.logit_mismatches,
                c.activation_mismatches, c.samples, c.logits, count_text(c.activations).c_str());
  r.note = buf;
  if (c.mismatches() != 0) {
    r.note = "MISMATCH: the integer run differs from the exact simulation; " + r.note;
    r.check_failure = "integer per-channel " + label + ": the integer run differs from the exact simulation in " +
                      std::to_string(c.prediction_mismatches) + " predictions, " + std::to_string(c.logit_mismatches) +
                      " logits, " + std::to_string(c.activation_mismatches) + " activations";
    std::fprintf(stderr, "MISMATCH: %s %s\n", model_name.c_str(), r.check_failure.c_str());
  }
  return r;
}

}  // namespace examples
