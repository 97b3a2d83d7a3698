// examples/tools/cmd_pq.hpp — `quant pq`: product quantization of one weight array
// (quant/pq.hpp; Jegou et al. 2011, Stock et al. 2020).
//
//   quant pq -w W.npy --d 8 --k 256 [--layout shared|per-subspace] [--init random|kmeans++]
//            [--iterations 20] [--seed 0] [--max-training-points N] [--int8-centroids]
//            [--indices-format npy|bin] -o DIR
//
// Rows of W ([out, in], or a conv weight [out, in, kh, kw] read as [out, in*kh*kw]) are cut
// into d-element subvectors; k-means learns k centroids per codebook (one codebook for the
// layer, or one per subvector position). Writes centroids.npy (+ centroid_scales.npy),
// the packed indices (indices.npy or indices.bin), decoded.npy and report.json.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include <quant/pq.hpp>

#include "cli_common.hpp"

namespace quant_cli {

// Sizes of one storage choice (float or int8 centroids) in the pq report.
inline json pq_size_json(std::size_t index_bytes, std::size_t centroid_bytes, std::size_t float32_bytes) {
  return {{"centroid_bytes", centroid_bytes},
          {"total_bytes", index_bytes + centroid_bytes},
          {"compression_ratio", double(float32_bytes) / double(index_bytes + centroid_bytes)}};
}

class pq_command : public command {
 public:
  CLI::App* add_to(CLI::App& app) override {
    auto* c = app.add_subcommand("pq", "product-quantize a weight array: k-means codebook, packed indices, decoded weights");
    c->add_option("--weights,-w", weights_, "W [out, in] or conv [out, in, kh, kw] (.npy); rows are cut into d-chunks")
        ->required();
    c->add_option("--out-dir,-o", out_dir_,
                  "writes centroids.npy [S, K, d] (+ centroid_scales.npy with --int8-centroids), indices.npy "
                  "(packed bytes, uint8) or indices.bin, decoded.npy, report.json")
        ->required()
        ->check(CLI::ExistingDirectory);
    c->add_option("--d", d_, "subvector dimension")->check(CLI::Range(std::size_t(1), std::size_t(4096)))->capture_default_str();
    c->add_option("--k", k_, "centroids per codebook")->check(CLI::Range(std::size_t(1), std::size_t(65536)))->capture_default_str();
    c->add_option("--iterations", iterations_, "k-means iterations")
        ->check(CLI::Range(std::size_t(1), std::size_t(100000)))
        ->capture_default_str();
    c->add_option("--seed", seed_, "k-means seed")->capture_default_str();
    c->add_option("--layout", layout_, "shared (iPQ: one codebook per layer) or per-subspace (Faiss)")
        ->check(CLI::IsMember({"shared", "per-subspace"}))
        ->capture_default_str();
    c->add_option("--init", init_, "k-means initialisation: random or kmeans++")
        ->check(CLI::IsMember({"random", "kmeans++"}))
        ->capture_default_str();
    c->add_option("--max-training-points", max_training_points_, "train each codebook on a seeded sample (0: all)")
        ->capture_default_str();
    c->add_flag("--int8-centroids", int8_centroids_, "store int8 centroids with one scale per codebook");
    c->add_option("--indices-format", indices_format_, "packed indices as npy (uint8 bytes) or bin (raw bytes)")
        ->check(CLI::IsMember({"npy", "bin"}))
        ->capture_default_str();
    return c;
  }

  // Trains the codebook(s) of one weight array, encodes and decodes it. With --int8-centroids
  // the centroids are stored as int8 with one scale per codebook, the assignments of the float
  // codebook are kept (they are not re-encoded) and decoded.npy holds the int8 centroids' values.
  int run() override {
    const xt::xarray<float> W = load_float(weights_);
    if (W.dimension() < 2)
      throw data_error(weights_ + ": shape " + examples::shape_text(shape_of(W)) +
                       " is not a weight matrix [out, in] or conv weight [out, in, kh, kw]");
    const std::size_t rows = W.shape()[0], cols = rows == 0 ? 0 : W.size() / rows;
    if (W.size() == 0) throw data_error(weights_ + ": the array is empty");
    if (cols % d_ != 0)
      throw data_error("--d " + std::to_string(d_) + " does not divide the row length " + std::to_string(cols) +
                       " of " + weights_ + " (in * kh * kw of a conv weight)");
    const bool shared = layout_ == "shared";
    const std::size_t per_codebook = shared ? rows * (cols / d_) : rows;
    if (per_codebook < k_)
      throw data_error("--k " + std::to_string(k_) + " is larger than the " + std::to_string(per_codebook) +
                       " subvectors each codebook is trained on" + (shared ? "" : " (one per row in per-subspace layout)"));
    quant::pq_options o;
    o.d = d_;
    o.k = k_;
    o.seed = seed_;
    o.iterations = iterations_;
    o.init = init_ == "kmeans++" ? quant::kmeans_init::kmeans_plus_plus : quant::kmeans_init::random_sample;
    o.layout = shared ? quant::pq_layout::shared : quant::pq_layout::per_subspace;
    o.max_training_points = max_training_points_;
    quant::pq_layer_result r;
    try {
      r = quant::pq_quantize_layer(W, o);
    } catch (const quant::domain_error& e) {
      throw data_error(weights_ + ": " + e.what());
    }
    const quant::packed_indices packed = quant::pack_indices(r.indices, quant::pq_index_bits(k_));

    json j;
    j["format"] = "quant-pq";
    j["version"] = 1;
    j["weights"] = weights_;
    j["shape"] = shape_of(W);
    j["rows"] = rows;
    j["row_length"] = cols;
    j["d"] = d_;
    j["k"] = k_;
    j["layout"] = layout_;
    j["init"] = init_;
    j["seed"] = seed_;
    j["iterations"] = iterations_;
    j["subvectors"] = rows * (cols / d_);
    j["codebooks"] = r.codebook.subspaces();
    j["index_bits"] = packed.bits;
    j["indices"] = {{"file", indices_format_ == "bin" ? "indices.bin" : "indices.npy"},
                    {"count", packed.count},
                    {"shape", {rows, cols / d_}},
                    {"packing", "LSB-first bit stream, index_bits per index, row-major [rows, row_length / d]"}};
    j["centroids"] = int8_centroids_ ? "int8" : "float32";
    j["mse"] = r.mse;  // of the stored centroids: replaced below for int8
    j["mse_float_centroids"] = r.mse;

    output_set out;
    const std::string dir = out_dir_ + "/";
    xt::xarray<float> decoded = r.decoded;
    double mse = r.mse;
    if (int8_centroids_) {
      const quant::int8_codebook q = quant::quantize_centroids(r.codebook);
      const xt::xtensor<float, 2> dq = quant::pq_decode(quant::dequantize_centroids(q), r.indices);
      std::copy(dq.begin(), dq.end(), decoded.begin());
      double s = 0.0;
      for (std::size_t i = 0; i < W.size(); ++i) {
        const double t = static_cast<double>(W.data()[i]) - static_cast<double>(decoded.data()[i]);
        s += t * t;
      }
      mse = s / static_cast<double>(W.size());
      j["mse_int8_centroids"] = mse;
      out.npy(dir + "centroids.npy", q.values);
      out.npy(dir + "centroid_scales.npy", to_array(q.scales));
    } else {
      out.npy(dir + "centroids.npy", r.codebook.centroids);
    }
    j["mse"] = mse;
    if (indices_format_ == "bin") {
      out.text(dir + "indices.bin", std::string(packed.bytes.begin(), packed.bytes.end()));
    } else {
      out.npy(dir + "indices.npy", xt::adapt(packed.bytes, std::vector<std::size_t>{packed.bytes.size()}));
    }
    out.npy(dir + "decoded.npy", decoded);
    const quant::pq_size_report& z = r.size;
    json size;
    size["weights"] = z.weights;
    size["float32_bytes"] = z.float32_bytes;
    size["index_bytes"] = z.index_bytes;
    const std::size_t cb = int8_centroids_ ? z.centroid_bytes_int8 : z.centroid_bytes;
    size["centroid_bytes"] = cb;
    size["total_bytes"] = z.index_bytes + cb;
    size["compression_ratio"] = double(z.float32_bytes) / double(z.index_bytes + cb);
    size["float_centroids"] = pq_size_json(z.index_bytes, z.centroid_bytes, z.float32_bytes);
    size["int8_centroids"] = pq_size_json(z.index_bytes, z.centroid_bytes_int8, z.float32_bytes);
    j["size"] = size;
    j["kmeans_objective"] = r.objective;  // per codebook, per iteration (sum of squared distances)
    out.text(dir + "report.json", json_text(j));
    out.commit();
    std::printf("pq: %zu subvectors of %zu -> %zu x %zu centroids (%s), %u-bit indices, MSE %.6g, %zu -> %zu bytes (x%.2f)\n",
                rows * (cols / d_), d_, r.codebook.subspaces(), k_, int8_centroids_ ? "int8" : "float32", packed.bits,
                mse, z.float32_bytes, z.index_bytes + cb, double(z.float32_bytes) / double(z.index_bytes + cb));
    return 0;
  }

 private:
  std::string weights_, out_dir_, layout_ = "shared", init_ = "random", indices_format_ = "npy";
  std::size_t d_ = 8, k_ = 256, iterations_ = 20, max_training_points_ = 0;
  std::uint64_t seed_ = 0;
  bool int8_centroids_ = false;
};

}  // namespace quant_cli
