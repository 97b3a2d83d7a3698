// main() for every quant benchmark: runs Google Benchmark as usual, then prints each
// benchmark's throughput (items/s) as a ratio to the same-run memcpy and store-loop
// baselines of the same element count (see bench_common.hpp for the naming convention).
// With --benchmark_repetitions=N the table keeps each benchmark's best repetition,
// baselines included: on a machine shared with other work the best of N is the closest
// to what the code does on its own, and the same rule applies to both sides of a ratio.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {

struct row {
  std::string name;
  long n;
  double items_per_second;
};

// First "/<digits>" field of a run name = the element count.
long size_of(const std::string& name) {
  std::size_t pos = 0;
  while ((pos = name.find('/', pos)) != std::string::npos) {
    ++pos;
    std::size_t end = pos;
    while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
    if (end > pos) return std::stol(name.substr(pos, end - pos));
  }
  return -1;
}

class ratio_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      if (r.error_occurred || r.run_type != Run::RT_Iteration) continue;
      auto it = r.counters.find("items_per_second");
      if (it == r.counters.end()) continue;
      const std::string name = r.benchmark_name();
      auto same = std::find_if(rows_.begin(), rows_.end(), [&](const row& x) { return x.name == name; });
      if (same == rows_.end())
        rows_.push_back({name, size_of(name), it->second.value});
      else if (it->second.value > same->items_per_second)
        same->items_per_second = it->second.value;
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    std::map<long, double> memcpy_rate, loop_rate;
    for (const auto& r : rows_) {
      if (r.name.rfind("copy_memcpy/", 0) == 0) memcpy_rate[r.n] = r.items_per_second;
      if (r.name.rfind("copy_loop/", 0) == 0) loop_rate[r.n] = r.items_per_second;
    }
    std::printf("\n%-58s %12s %10s %10s\n", "benchmark", "Gelem/s", "x memcpy", "x loop");
    for (const auto& r : rows_) {
      const double m = memcpy_rate.count(r.n) ? r.items_per_second / memcpy_rate[r.n] : 0.0;
      const double l = loop_rate.count(r.n) ? r.items_per_second / loop_rate[r.n] : 0.0;
      std::printf("%-58s %12.3f %10.2f %10.2f\n", r.name.c_str(), r.items_per_second * 1e-9, m, l);
    }
  }

 private:
  std::vector<row> rows_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
