// quant — command-line quantization of NumPy .npy files with the quant library.
//
//   quant fake-quant  -i x.npy -o y.npy  --bits 4 [--axis 0 | --group 32] (--scale S | --observer mse | --params p.json)
//   quant quantize    -i x.npy -o q.npy  ... [--scales-out s.npy] [--zero-points-out z.npy] [--encodings e.json]
//   quant calibrate   -i a.npy [-i b.npy ...] --observer mse --bits 8 [--axis 1] -o params.json
//   quant lsq-grad    --x x.npy --dy dy.npy --scale S [--zero-point B] --dx dx.npy [-o grads.json]
//   quant adaround    --weights W.npy --inputs X.npy [--quantized-inputs Xq.npy] --bits 4 --out-dir DIR
//   quant kurtosis    -i a.npy [-i b.npy ...] [--unbiased] [--target 1.8] [--format table|json] [-o k.json]
//   quant pq          --weights W.npy --d 8 --k 256 [--layout shared|per-subspace] [--int8-centroids] --out-dir DIR
//   quant gptq        -w W.npy -x X.npy --bits 4 [--group-size 32] [--act-order] [--damp 0.01] -o DIR
//   quant eval        --model DIR --input X.npy [--labels y.npy] [--logits-out L.npy]
//   quant ptq         --model DIR --calib X.npy [--eval X.npy --labels y.npy] -o OUT_DIR [--cle ...]
//   quant export      --model QUANTIZED_DIR -o ENGINE_DIR [--requantization fixed-point|float-scale] [--weight-format int8|int4]
//   quant run         --model ENGINE_DIR --input X.npy [--labels y.npy] [--logits-out L.npy] [--simulate exact]
//
// Exit status: 0 success, 1 bad data (unreadable/malformed .npy, NaN where rejected,
// shapes that do not fit), 2 usage errors (unknown options, missing or conflicting
// options, values out of range). Outputs are written under temporary names and renamed
// only once every output of the command is complete, so a failure leaves no partial file.
// Each subcommand is a quant_cli::command class in cmd_<name>.hpp that registers its own
// options beside its run(); what they share (grid and observer flags, parameter sources,
// atomic outputs, .npy loading) is in cli_common.hpp.
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <quant/config.hpp>
#include <quant/error.hpp>

#include "../common/openmp_wait_policy.hpp"
#include "cli_common.hpp"
#include "cmd_adaround.hpp"
#include "cmd_calibrate.hpp"
#include "cmd_eval.hpp"
#include "cmd_export.hpp"
#include "cmd_fake_quant.hpp"
#include "cmd_gptq.hpp"
#include "cmd_kurtosis.hpp"
#include "cmd_lsq_grad.hpp"
#include "cmd_pq.hpp"
#include "cmd_ptq.hpp"
#include "cmd_quantize.hpp"
#include "cmd_run.hpp"

int main(int argc, char** argv) {
  using namespace quant_cli;
  examples::use_passive_openmp_waits(argv);
  CLI::App app{"quant: quantize NumPy .npy files (float32/float64 in) with the quant library.\n"
               "Exit status: 0 success, 1 bad data, 2 usage error."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::to_string(quant::version.major) + "." + std::to_string(quant::version.minor) +
                                        "." + std::to_string(quant::version.patch));

  // One class per subcommand (cmd_<name>.hpp), each registering its own options; --help
  // lists them in this order.
  std::vector<std::unique_ptr<command>> commands;
  commands.push_back(std::make_unique<fake_quant_command>());
  commands.push_back(std::make_unique<quantize_command>());
  commands.push_back(std::make_unique<calibrate_command>());
  commands.push_back(std::make_unique<lsq_grad_command>());
  commands.push_back(std::make_unique<adaround_command>());
  commands.push_back(std::make_unique<kurtosis_command>());
  commands.push_back(std::make_unique<pq_command>());
  commands.push_back(std::make_unique<gptq_command>());
  commands.push_back(std::make_unique<eval_command>());
  commands.push_back(std::make_unique<ptq_command>());
  commands.push_back(std::make_unique<export_command>());
  commands.push_back(std::make_unique<run_command>());
  std::vector<CLI::App*> command_apps;
  for (auto& c : commands) command_apps.push_back(c->add_to(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);  // prints the message
    return 2;
  }

  try {
    for (std::size_t i = 0; i < commands.size(); ++i)
      if (command_apps[i]->parsed()) return commands[i]->run();
  } catch (const usage_error& e) {
    std::fprintf(stderr, "quant: %s\nRun with --help for more information.\n", e.what());
    return 2;
  } catch (const quant::invalid_argument& e) {
    std::fprintf(stderr, "quant: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {  // data errors, quant::domain_error / length_error, I/O
    std::fprintf(stderr, "quant: %s\n", e.what());
    return 1;
  }
  return 2;
}
