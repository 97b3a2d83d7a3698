// Fashion-MNIST quantization demo: trains (or loads) an MLP and a small CNN in FP32, then
// quantizes them with quant's primitives and prints one table of test accuracy, with the
// time each row took. The table is also written as CSV and an SVG chart.
//
//   fashion_mnist_demo [--quick] [--data DIR] [--cache-dir DIR] [--out DIR]
//
// --quick: the MLP only, fewer epochs and optimisation iterations (about a minute on two
// cores); the test suite runs it with --check, which turns the sanity expectations into
// the exit status.
#include <malloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "../common/idx_reader.hpp"
#include "../common/openmp_wait_policy.hpp"
#include "bn_methods.hpp"
#include "bundle_export.hpp"
#include "methods.hpp"
#include "report.hpp"
#include "trainer.hpp"

using namespace examples;

namespace {

// The directory of this executable (the build tree): default home of the cache and results,
// so that running the demo from the source tree does not write into it.
std::string executable_dir() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<std::size_t>(n));
  const auto slash = p.rfind('/');
  return slash == std::string::npos ? "." : p.substr(0, slash);
}

struct demo_options {
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string cache_dir = executable_dir() + "/cache";
  std::string out_dir = executable_dir();
  bool quick = false;
  bool check = false;
  bool retrain = false;
  std::vector<std::string> models = {"mlp", "cnn", "bnnet"};
  std::uint64_t seed = 1;
  int threads = -1;  // -1: per row, see row_threads
  std::size_t iterations = 0, qat_steps = 0;
  std::vector<std::string> only;
};

void save_bundle(const model& m, const std::string& entry);

// quant's threads for a row (--threads; BLAS always runs on one, see network.hpp). By default
// (-1) the AdaRound and QDrop rows, whose time goes to quant's passes over whole layers, run on
// every core, the other rows on one: their quant passes (LSQ on one batch, Quant-Noise on one
// layer) are too small to gain from a second thread (examples/README.md has the figures).
// 0 (OpenMP's default) or n > 0 applies to every row. Results do not depend on it.
int row_threads(const std::string& label, int threads) {
  if (threads >= 0) return threads;
  const bool reconstruction = label.find("AdaRound") != std::string::npos || label.find("QDrop") != std::string::npos;
  return reconstruction ? 0 : 1;
}

network trained_network(const std::string& name, const std::vector<layer_spec>& specs, const train_config& cfg,
                        const split_tensors& train_set, const demo_options& o, double& seconds) {
  network net = make_network(name, specs, cfg.seed);
  const std::string dir = o.cache_dir + "/" + cache_key(net, cfg);
  const auto t0 = std::chrono::steady_clock::now();
  if (!o.retrain && load_cached(net, dir)) {
    std::fprintf(stderr, "%s: FP32 weights loaded from %s\n", name.c_str(), dir.c_str());
  } else {
    train(net, train_set, cfg);
    save_cached(net, dir);
    std::fprintf(stderr, "%s: FP32 weights cached in %s\n", name.c_str(), dir.c_str());
  }
  seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  save_bundle(to_bundle(net), dir);
  return net;
}

// <entry>/bundle: the trained network as a model bundle for `quant eval` / `quant ptq`
// (rewritten every run: a few small files, replaced atomically).
void save_bundle(const model& m, const std::string& entry) {
  const std::string dir = entry + "/bundle";
  save_model(m, dir);
  std::fprintf(stderr, "model bundle written to %s\n", dir.c_str());
}

// <prefix>-x.npy [n, 1, 28, 28] float32 and <prefix>-y.npy [n] int64, unless present.
void save_split_once(const nchw_split& s, const std::string& prefix) {
  struct stat st {};
  if (::stat((prefix + "-x.npy").c_str(), &st) == 0 && ::stat((prefix + "-y.npy").c_str(), &st) == 0) return;
  save_npy(prefix + "-x.npy", s.x);
  save_npy(prefix + "-y.npy", xt::adapt(s.labels, {s.labels.size()}));
}

}  // namespace

int main(int argc, char** argv) {
  examples::use_passive_openmp_waits(argv);  // docs/threading.md
  demo_options o;
  CLI::App app{"quant: Fashion-MNIST post-training quantization and QAT demo"};
  app.add_option("--data", o.data_dir, "directory with the Fashion-MNIST IDX files (.gz or plain)")
      ->capture_default_str();
  app.add_option("--cache-dir", o.cache_dir, "where the trained FP32 weights are cached as .npy")->capture_default_str();
  app.add_option("--out", o.out_dir, "where fashion_mnist_results.csv / .svg are written")->capture_default_str();
  app.add_flag("--quick", o.quick, "MLP only, fewer epochs and iterations (about a minute on 2 cores)");
  app.add_flag("--check", o.check, "exit with status 1 unless the sanity expectations hold");
  app.add_flag("--retrain", o.retrain, "ignore the FP32 cache");
  app.add_option("--models", o.models, "which networks to run (mlp, cnn, bnnet); --quick runs the MLP only")
      ->check(CLI::IsMember({"mlp", "cnn", "bnnet"}))
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of initialisation, shuffling and every random method")->capture_default_str();
  app.add_option("--threads", o.threads,
                 "threads of quant's kernels: -1 = every core for the AdaRound / QDrop rows and one for the "
                 "others (fastest), 0 = OpenMP's default, n = n; BLAS always runs on one")
      ->capture_default_str();
  app.add_option("--iterations", o.iterations, "override the AdaRound / QDrop iterations per layer");
  app.add_option("--qat-steps", o.qat_steps, "override the LSQ / LSQ+ fine-tuning steps (batches of 128)");
  app.add_option("--only", o.only, "run only the rows whose method contains one of these strings (FP32 always runs)");
  CLI11_PARSE(app, argc, argv);

  try {
    use_single_threaded_blas();
    // Training allocates the same few-MB buffers every step; keep freed memory in the heap
    // instead of returning it to the kernel (glibc would mmap/munmap each one and pay the
    // page faults again, ~15 % of the CNN's training time).
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    quant::set_num_threads(row_threads("", o.threads));
    ::mkdir(o.cache_dir.c_str(), 0755);
    ::mkdir(o.out_dir.c_str(), 0755);
    const auto t_start = std::chrono::steady_clock::now();
    std::fprintf(stderr, "loading Fashion-MNIST from %s\n", o.data_dir.c_str());
    const fashion_mnist raw = load_fashion_mnist(o.data_dir);
    const split_tensors train_set = to_tensors(raw.train), test_set = to_tensors(raw.test);
    const split_tensors calib = calibration_subset(train_set, 1024, o.seed);

    method_budget budget = o.quick ? method_budget::quick() : method_budget::full();
    if (o.iterations) budget.adaround_iterations = budget.qdrop_iterations = o.iterations;
    if (o.qat_steps) budget.qat_steps = o.qat_steps;
    std::vector<result_row> rows;
    struct model_job {
      std::string name;
      std::vector<layer_spec> specs;
      train_config cfg;
    };
    std::vector<model_job> jobs;
    auto wanted = [&](const char* m) {
      return std::find(o.models.begin(), o.models.end(), m) != o.models.end() && (!o.quick || std::string(m) == "mlp");
    };
    if (wanted("mlp")) {
      train_config cfg;
      cfg.epochs = o.quick ? 3 : 10;
      cfg.seed = o.seed;
      jobs.push_back({"mlp", mlp_specs(), cfg});
    }
    if (wanted("cnn")) {
      train_config cfg;
      cfg.epochs = 3;
      cfg.seed = o.seed;
      jobs.push_back({"cnn", cnn_specs(), cfg});
    }
    for (const auto& job : jobs) {
      double train_seconds = 0.0;
      const network net = trained_network(job.name, job.specs, job.cfg, train_set, o, train_seconds);
      model_context ctx{net, train_set, calib, test_set, budget, o.seed};
      ctx.train_cfg = job.cfg;
      ctx.cache_dir = o.cache_dir;
      ctx.retrain = o.retrain;
      // The CNN's im2col batches are 196-784 times larger than the MLP's: half the
      // iterations keep the full run within a few minutes.
      if (job.name == "cnn" && !o.iterations) ctx.budget.adaround_iterations = budget.adaround_iterations / 2;
      for (const auto& def : row_registry()) {
        if (!def.applies_to(job.name)) continue;
        const auto t0 = std::chrono::steady_clock::now();
        if (!o.only.empty() && !def.matches(o.only)) continue;
        if (o.quick && !def.quick) continue;
        quant::set_num_threads(row_threads(def.label, o.threads));
        result_row r = def.run(ctx);
        r.model = job.name;
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r.method == "FP32") r.note = "training " + format_seconds(train_seconds);
        print_row(r, rows.empty());
        rows.push_back(r);
      }
    }
    if (wanted("bnnet")) {
      train_config cfg;
      cfg.epochs = 3;
      cfg.learning_rate = 1e-2f;  // BN tolerates it; 2e-3 reached 82.5 % in the same 3 epochs
      cfg.seed = o.seed;
      double train_seconds = 0.0;
      std::string entry;
      const bn_network net = trained_bn_network(cfg, train_set, o.cache_dir, o.retrain, train_seconds, entry);
      const model bundle = to_bundle(net);
      save_bundle(bundle, entry);
      const nchw_split calib_nchw = to_nchw(calib), test_nchw = to_nchw(test_set);
      save_split_once(calib_nchw, o.cache_dir + "/fmnist-calib1024-s" + std::to_string(o.seed));
      save_split_once(test_nchw, o.cache_dir + "/fmnist-test");
      const bn_context ctx{bundle, calib_nchw, test_nchw, budget, o.seed};
      for (const auto& def : bn_row_registry()) {
        if (!o.only.empty() && !def.matches(o.only)) continue;
        const auto t0 = std::chrono::steady_clock::now();
        quant::set_num_threads(row_threads(def.label, o.threads));
        result_row r = def.run(ctx);
        r.model = "bnnet";
        r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r.method == "FP32") r.note = "training " + format_seconds(train_seconds);
        print_row(r, rows.empty());
        rows.push_back(r);
      }
    }
    const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::printf("\ntotal %.1f s\n", total);
    const std::string csv = o.out_dir + "/fashion_mnist_results.csv", svg = o.out_dir + "/fashion_mnist_results.svg";
    write_csv(csv, rows);
    write_svg(svg, rows);
    std::printf("wrote %s and %s\n", csv.c_str(), svg.c_str());
    if (o.check) {
      const auto failures = sanity_failures(rows);
      for (const auto& f : failures) std::fprintf(stderr, "CHECK FAILED: %s\n", f.c_str());
      if (!failures.empty()) return 1;
      std::printf("all sanity checks passed\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fashion_mnist_demo: %s\n", e.what());
    return 1;
  }
  return 0;
}
