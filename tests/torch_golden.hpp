// Reader for the PyTorch golden files under tests/data/ (written by tools/torch_golden.py;
// the format is described there). The tests never need torch itself.
#pragma once

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <quant/qparams.hpp>

namespace quant_test {

struct golden_case {
  std::string name, kind;
  int qmin = 0, qmax = 0, axis = -1;
  std::size_t grad_factor_n = 0;
  std::vector<std::size_t> shape;
  std::map<std::string, std::vector<float>> arrays;
  const std::vector<float>& operator[](const std::string& key) const { return arrays.at(key); }
};

inline std::vector<golden_case> read_golden(const std::string& file) {
  const std::string path = std::string(QUANT_SOURCE_DIR) + "/tests/data/" + file;
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<golden_case> cases;
  golden_case c;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string key;
    ls >> key;
    if (key == "case") {
      c = golden_case{};
      ls >> c.name;
    } else if (key == "kind") {
      ls >> c.kind;
    } else if (key == "qmin") {
      ls >> c.qmin;
    } else if (key == "qmax") {
      ls >> c.qmax;
    } else if (key == "axis") {
      ls >> c.axis;
    } else if (key == "grad_factor_n") {
      ls >> c.grad_factor_n;
    } else if (key == "shape") {
      std::size_t nd = 0;
      ls >> nd;
      c.shape.resize(nd);
      for (auto& d : c.shape) ls >> d;
    } else if (key == "end") {
      cases.push_back(c);
    } else {
      std::size_t n = 0;
      ls >> n;
      std::vector<float> v(n);
      std::string tok;
      for (auto& x : v) {
        ls >> tok;
        x = std::strtof(tok.c_str(), nullptr);  // %.9g round-trips float32 exactly
      }
      c.arrays[key] = std::move(v);
    }
  }
  return cases;
}

// The quant::grid whose [qmin, qmax] is the given range.
inline quant::grid grid_for(int qmin, int qmax) {
  for (int b = 2; b <= 16; ++b)
    for (bool s : {true, false})
      for (bool narrow : {false, true}) {
        const quant::grid g{b, s, narrow};
        if (g.qmin() == qmin && g.qmax() == qmax) return g;
      }
  throw std::runtime_error("no grid for [" + std::to_string(qmin) + ", " + std::to_string(qmax) + "]");
}

}  // namespace quant_test
