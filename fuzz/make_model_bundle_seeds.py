#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_model_bundle (fuzz/corpus/fuzz_model_bundle/): small model
bundles and integer engine directories packed in the harness's archive format, one file per
section "\\n=== <name>\\n<bytes>". Scales are powers of two, so every multiplier an engine
stores is exact in double and equals the reader's recomputation.
    python3 fuzz/make_model_bundle_seeds.py
"""
import json
import os
import random
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_model_bundle")


def npy(values, shape, descr="<f4", fortran=False):
    """A version 1.0 .npy file; values in C order (written transposed for Fortran order)."""
    n = 1
    for d in shape:
        n *= d
    assert len(values) == n
    if fortran:  # the file holds the column-major order of the same array
        strides, acc = [], 1
        for d in reversed(shape):
            strides.insert(0, acc)
            acc *= d
        order = []
        def walk(dim, idx):
            if dim < 0:
                order.append(sum(i * s for i, s in zip(idx, strides)))
                return
            for i in range(shape[dim]):
                walk(dim - 1, [i] + idx)
        walk(len(shape) - 1, [])
        values = [values[i] for i in order]
    tup = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", tup)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    fmt = {"<f4": "f", "<f8": "d", "|i1": "b", "|u1": "B"}[descr]
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack("<%d%s" % (n, fmt), *values)


def normal(r, n):
    return [r.gauss(0.0, 1.0) for _ in range(n)]


def archive(files):
    out = b""
    for name, data in files.items():
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        out += b"\n=== " + name.encode() + b"\n" + data
    return out


def enc(bits, signed, scales, zps, shape, granularity="per_tensor", axis=None, scheme="asymmetric"):
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    j = {"format": "quant-encodings", "version": 1, "bits": bits, "signed": signed, "narrow": False, "qmin": lo,
         "qmax": hi, "scheme": scheme, "granularity": granularity, "rounding": "half_to_even", "shape": shape,
         "scales": scales, "zero_points": zps}
    if axis is not None:
        j["axis"] = axis
    return j


def seeds():
    r = random.Random(1)
    s = {}
    s["mlp"] = {"model.json": {"format": "quant-model", "version": 1, "input_shape": [4], "layers": [
        {"type": "linear", "name": "fc1", "weight": "fc1.w.npy", "bias": "fc1.b.npy"}, {"type": "relu"},
        {"type": "linear", "name": "fc2", "weight": "fc2.w.npy", "bias": None}]},
        "fc1.w.npy": npy(normal(r, 12), [3, 4]), "fc1.b.npy": npy([0.0, 1.0, 2.0], [3]),
        "fc2.w.npy": npy(normal(r, 6), [2, 3], "<f8")}
    s["cnn"] = {"model.json": {"format": "quant-model", "version": 1, "input_shape": [1, 5, 5], "layers": [
        {"type": "conv2d", "name": "c", "weight": "c.w.npy", "bias": "c.b.npy", "stride": 1, "padding": [1, 1],
         "groups": 1}, {"type": "relu6"}, {"type": "maxpool2d", "kernel": 2}, {"type": "flatten"},
        {"type": "linear", "name": "fc", "weight": "fc.w.npy"}]},
        "c.w.npy": npy(normal(r, 18), [2, 1, 3, 3]),
        "c.b.npy": npy([0.0, 0.0], [2]),
        "fc.w.npy": npy(normal(r, 24), [3, 8], fortran=True)}
    s["bn"] = {"model.json": {"format": "quant-model", "version": 1, "input_shape": [2, 3, 3], "layers": [
        {"type": "batchnorm2d", "name": "bn", "weight": "g.npy", "bias": "b.npy", "running_mean": "m.npy",
         "running_var": "v.npy", "eps": 1e-5}, {"type": "avgpool2d", "kernel": 3, "stride": 1, "padding": 1},
        {"type": "global_avgpool"}, {"type": "flatten"},
        {"type": "conv2d", "name": "dw", "weight": "g.npy", "groups": 2}]},
        "g.npy": npy([1.0, 1.0], [2]), "b.npy": npy([0.0, 0.0], [2]),
        "m.npy": npy([0.0, 0.0], [2]), "v.npy": npy([1.0, 1.0], [2])}
    # A quantized bundle: weights on their grid (scale 2^-4), activation encodings unsigned.
    wq = [r.randint(-8, 7) * 0.0625 for _ in range(12)]
    s["quantized"] = {"model.json": {"format": "quant-model", "version": 1, "input_shape": [4], "layers": [
        {"type": "linear", "name": "fc", "weight": "fc.w.npy", "bias": "fc.b.npy", "input_encodings": "in.json",
         "weight_encodings": "w.json"}]},
        "fc.w.npy": npy(wq, [3, 4]), "fc.b.npy": npy([0.5, -0.25, 0.0], [3]),
        "in.json": enc(8, False, [0.03125], [128], [1, 4]),
        "w.json": enc(4, True, [0.0625] * 3, [0] * 3, [3, 4], "per_channel", 0, "symmetric")}

    def grid(scale, z=128, bits=8):
        return {"scale": scale, "zero_point": z, "qmin": 0, "qmax": (1 << bits) - 1, "bits": bits}

    w8 = [r.randint(-127, 127) for _ in range(12)]
    w8b = [r.randint(-127, 127) for _ in range(6)]
    s["engine_logits"] = {"engine.json": {
        "format": "quant-integer-model", "version": 1, "requantization": "fixed_point", "weight_format": "int8",
        "input_shape": [4], "input": grid(0.03125), "output_shape": [3], "ops": [
            {"type": "linear", "name": "fc", "input_shape": [4], "output_shape": [3], "weights": "fc.weights.npy",
             "weights_shape": [3, 4], "weight_grid_bits": 8, "weight_scales": [0.0625, 0.125, 0.25],
             "bias": [5, -7, 0], "input": grid(0.03125), "output": "logits",
             "output_scales": [0.03125 * 0.0625, 0.03125 * 0.125, 0.03125 * 0.25]}]},
        "fc.weights.npy": npy(w8, [3, 4], "|i1")}
    ws1 = [0.0625, 0.125, 0.25]
    m1 = [0.03125 * w / 0.5 for w in ws1]
    s["engine_two"] = {"engine.json": {
        "format": "quant-integer-model", "version": 1, "requantization": "float_scale", "weight_format": "int8",
        "input_shape": [4], "input": grid(0.03125), "output_shape": [2], "ops": [
            {"type": "linear", "name": "fc1", "input_shape": [4], "output_shape": [3], "weights": "fc1.weights.npy",
             "weights_shape": [3, 4], "weight_grid_bits": 8, "weight_scales": ws1, "bias": [1, 2, 3],
             "input": grid(0.03125), "output": grid(0.5, 0), "activation": "relu", "multipliers": m1,
             "fixed_point_multipliers": [0], "shifts": [0], "float_multipliers": m1, "clamp": [0, 255]},
            {"type": "linear", "name": "fc2", "input_shape": [3], "output_shape": [2], "weights": "fc2.weights.npy",
             "weights_shape": [2, 3], "weight_grid_bits": 8, "weight_scales": [1.0, 2.0], "bias": [0, 0],
             "input": grid(0.5, 0), "output": "logits", "output_scales": [0.5, 1.0]}]},
        "fc1.weights.npy": npy(w8, [3, 4], "|i1"), "fc2.weights.npy": npy(w8b, [2, 3], "|i1")}
    w4 = [r.randint(-8, 7) & 0xF for _ in range(8)]  # [2, 4], element 2j in the low nibble of byte j
    nib = [w4[2 * j] | (w4[2 * j + 1] << 4) for j in range(4)]
    s["engine_int4_conv"] = {"engine.json": {
        "format": "quant-integer-model", "version": 1, "requantization": "fixed_point", "weight_format": "int4",
        "input_shape": [1, 3, 3], "input": grid(0.25), "output_shape": [2], "ops": [
            {"type": "maxpool2d", "name": "pool", "input_shape": [1, 3, 3], "output_shape": [1, 2, 2],
             "kernel": [2, 2], "stride": [1, 1], "padding": [0, 0], "zero_point": 128},
            {"type": "flatten", "name": "flat", "input_shape": [1, 2, 2], "output_shape": [4]},
            {"type": "linear", "name": "fc", "input_shape": [4], "output_shape": [2], "weights": "fc.weights.npy",
             "weights_shape": [2, 4], "weight_grid_bits": 4, "weight_scales": [0.5, 0.5], "bias": [0, 1],
             "input": grid(0.25), "output": "logits", "output_scales": [0.125, 0.125]}]},
        "fc.weights.npy": npy(nib, [4], "|u1")}
    return s


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, files in seeds().items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(archive(files))
