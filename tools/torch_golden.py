#!/usr/bin/python3
"""Golden data from PyTorch for quant's tests (tests/test_ste.cpp, tests/test_lsq.cpp).

Writes two text files under tests/data/ (committed; the test suite never needs torch):

  torch_fake_quantize.txt  torch.fake_quantize_per_tensor_affine and
                           torch.fake_quantize_per_channel_affine (+ the cachemask mask,
                           i.e. the clipped-STE gradient of a ones upstream gradient)
  torch_learnable.txt      torch._fake_quantize_learnable_per_tensor_affine and
                           _per_channel_affine: forward, and the gradients w.r.t. x, scale
                           and zero point for a random upstream gradient, with grad_factor

Format: one item per line, whitespace separated, cases end with "end":
  case <name>
  kind <fq_tensor|fq_channel|lsq_tensor|lsq_channel>
  qmin <int> / qmax <int> / axis <int> / grad_factor_n <N or 0 (grad_factor = 1)>
  shape <ndim> <d0> ...
  <array name> <count> <values ...>    (float32 values printed with %.9g: exact round trip)
grad_factor, when N > 0, is 1 / sqrt(N * qmax) computed in Python double, exactly as
quant::lsq_gradient_scale computes it.

Usage (Debian 12: apt-get install python3-torch):  /usr/bin/python3 tools/torch_golden.py
Deterministic: seeded generator, single thread.
"""
import math
import os
import sys

import torch

torch.set_num_threads(1)
GEN = torch.Generator().manual_seed(20240601)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data")


def fmt(values):
    flat = values.detach().reshape(-1).to(torch.float32).tolist()
    return " ".join("%.9g" % v for v in flat)


def write_array(f, name, t):
    f.write("%s %d %s\n" % (name, t.numel(), fmt(t)))


def normal(shape, std=1.0):
    return torch.randn(shape, generator=GEN, dtype=torch.float32) * std


def uniform(shape, lo, hi):
    return torch.rand(shape, generator=GEN, dtype=torch.float32) * (hi - lo) + lo


def test_inputs(shape, scale, zero_point, qmin, qmax):
    """Normal data spread well beyond the grid, exact rounding ties, grid edges, -0.0."""
    n = int(torch.tensor(shape).prod())
    s = float(scale)
    span = (qmax - qmin) * s
    x = normal((n,), span / 2.0)
    # ties: (k + 0.5) * s relative to the zero point (exact when s is a power of two)
    m = min(n // 4, 64)
    k = torch.randint(qmin - 3, qmax + 3, (m,), generator=GEN).to(torch.float32)
    x[:m] = (k - zero_point + 0.5) * s
    # just inside / outside the edges
    if n > m + 8:
        edges = torch.tensor([qmin - 0.5, qmin - 0.49, qmax + 0.5, qmax + 0.49,
                              qmin - 0.51, qmax + 0.51, qmin - 1000.0, qmax + 1000.0])
        x[m:m + 8] = (edges - zero_point) * s
    if n > m + 9:
        x[m + 8] = -0.0
    return x.reshape(shape)


def per_tensor_cases(f):
    grids = [(-128, 127), (0, 255), (-8, 7), (0, 15), (-127, 127), (-2, 1), (0, 65535), (-32768, 32767)]
    scales = [0.1, 1.0 / 3.0, 0.0078125, 1e-3, 37.5, 2.0 ** -20, 0.05]
    case = 0
    for qmin, qmax in grids:
        for s in scales:
            zps = sorted({0, qmin, qmax, (qmin + qmax) // 2, qmin + (qmax - qmin) // 3}) if qmin < 0 else \
                sorted({qmin, qmax, (qmin + qmax + 1) // 2, qmin + 3})
            zps = [z for z in zps if qmin <= z <= qmax]
            z = zps[case % len(zps)]
            case += 1
            sf = float(torch.tensor(s, dtype=torch.float32))
            x = test_inputs((97,), sf, z, qmin, qmax)
            y, mask = torch.fake_quantize_per_tensor_affine(x, sf, z, qmin, qmax), None
            xg = x.clone().requires_grad_()
            torch.fake_quantize_per_tensor_affine(xg, sf, z, qmin, qmax).backward(torch.ones_like(x))
            mask = xg.grad
            f.write("case fq_tensor_%d\nkind fq_tensor\nqmin %d\nqmax %d\nshape 1 %d\n" % (case, qmin, qmax, x.numel()))
            write_array(f, "scale", torch.tensor([sf]))
            write_array(f, "zero_point", torch.tensor([float(z)]))
            write_array(f, "x", x)
            write_array(f, "y", y)
            write_array(f, "mask", mask)
            f.write("end\n")


def per_channel_cases(f):
    specs = [((4, 7, 5), 0, -128, 127), ((4, 7, 5), 1, 0, 255), ((4, 7, 5), 2, -8, 7),
             ((6, 70), 0, -128, 127), ((70, 6), 1, 0, 15), ((3, 130), 0, -127, 127), ((2, 3, 80), 1, -2, 1)]
    for i, (shape, axis, qmin, qmax) in enumerate(specs):
        c = shape[axis]
        scale = uniform((c,), 0.01, 0.3)
        scale[0] = 0.0078125  # a power of two: exact ties
        zp = torch.randint(qmin, qmax + 1, (c,), generator=GEN, dtype=torch.int32)
        zp[0] = 0 if qmin <= 0 <= qmax else qmin
        x = normal(shape, 0.5 * (qmax - qmin) * float(scale.mean()))
        # ties on channel 0 along the axis
        idx = [slice(None)] * len(shape)
        idx[axis] = 0
        sl = x[tuple(idx)]
        k = torch.randint(qmin - 2, qmax + 2, sl.shape, generator=GEN).to(torch.float32)
        x[tuple(idx)] = (k - float(zp[0]) + 0.5) * float(scale[0])
        y = torch.fake_quantize_per_channel_affine(x, scale, zp, axis, qmin, qmax)
        xg = x.clone().requires_grad_()
        torch.fake_quantize_per_channel_affine(xg, scale, zp, axis, qmin, qmax).backward(torch.ones_like(x))
        f.write("case fq_channel_%d\nkind fq_channel\nqmin %d\nqmax %d\naxis %d\nshape %d %s\n" %
                (i, qmin, qmax, axis, len(shape), " ".join(str(d) for d in shape)))
        write_array(f, "scale", scale)
        write_array(f, "zero_point", zp.to(torch.float32))
        write_array(f, "x", x)
        write_array(f, "y", y)
        write_array(f, "mask", xg.grad)
        f.write("end\n")


def learnable(f, name, shape, axis, qmin, qmax, scale, zp, n_factor, x=None, dy=None):
    """One learnable case; axis < 0 means per tensor."""
    if x is None:
        x = normal(shape, 0.4 * (qmax - qmin) * float(scale.mean()))
    if dy is None:
        dy = normal(shape)
    grad_factor = 1.0 if n_factor == 0 else 1.0 / math.sqrt(n_factor * qmax)
    xg = x.clone().requires_grad_()
    sg = scale.clone().requires_grad_()
    zg = zp.clone().requires_grad_()
    if axis < 0:
        y = torch._fake_quantize_learnable_per_tensor_affine(xg, sg, zg, qmin, qmax, grad_factor)
    else:
        y = torch._fake_quantize_learnable_per_channel_affine(xg, sg, zg, axis, qmin, qmax, grad_factor)
    y.backward(dy)
    f.write("case %s\nkind %s\nqmin %d\nqmax %d\naxis %d\ngrad_factor_n %d\nshape %d %s\n" %
            (name, "lsq_tensor" if axis < 0 else "lsq_channel", qmin, qmax, axis, n_factor, len(shape),
             " ".join(str(d) for d in shape)))
    write_array(f, "scale", scale)
    write_array(f, "zero_point", zp)
    write_array(f, "x", x)
    write_array(f, "dy", dy)
    write_array(f, "y", y)
    write_array(f, "dx", xg.grad)
    write_array(f, "dscale", sg.grad)
    write_array(f, "dzero_point", zg.grad)
    f.write("end\n")


def learnable_cases(f):
    # per tensor: integral, fractional, negative fractional (PyTorch's backward rounds it
    # differently from its forward) and half-integer zero points; grad_factor from N
    tensor_specs = [((20, 30), -128, 127, 0.021, 0.0, 600), ((20, 30), 0, 255, 0.013, 17.3, 0),
                    ((600,), -8, 7, 0.11, 2.5, 600), ((600,), 0, 15, 0.07, -0.7, 150),
                    ((3, 7, 11), 0, 255, 0.05, 128.5, 231), ((400,), -2, 1, 0.3, -1.5, 400),
                    ((512,), -128, 127, 0.0078125, 3.0, 512)]
    for i, (shape, qmin, qmax, s, z, nf) in enumerate(tensor_specs):
        scale = torch.tensor([s], dtype=torch.float32)
        zp = torch.tensor([z], dtype=torch.float32)
        x = None
        if i == 6:  # exact ties and far-out values
            x = test_inputs(shape, float(scale[0]), 3, qmin, qmax)
        learnable(f, "lsq_tensor_%d" % i, shape, -1, qmin, qmax, scale, zp, nf, x)
    channel_specs = [((6, 80), 0, -128, 127), ((60, 8), 1, 0, 255), ((4, 6, 10), 1, -8, 7),
                     ((8, 70), 0, 0, 15), ((5, 12), -2, -128, 127)]
    for i, (shape, axis, qmin, qmax) in enumerate(channel_specs):
        if axis < 0:
            axis += len(shape)
        c = shape[axis]
        scale = uniform((c,), 0.01, 0.2)
        zp = uniform((c,), float(qmin), float(qmax))
        zp[0] = 0.5 if qmin <= 0 else float(qmin) + 0.5  # a tie: torch.round -> even
        zp[1] = float(qmin) - 3.0  # off the grid: clamped
        n_per_channel = 1
        for d in shape:
            n_per_channel *= d
        n_per_channel //= c
        learnable(f, "lsq_channel_%d" % i, shape, axis, qmin, qmax, scale, zp, n_per_channel if i % 2 == 0 else 0)


def f32(v):
    """The float32 nearest to the exact rational v (ties to even), as a Python float."""
    import fractions
    import numpy as np
    v = fractions.Fraction(v)
    c = np.float32(float(v))
    best = None
    for cand in (np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))):
        d = abs(fractions.Fraction(float(cand)) - v)
        even = int(np.array(cand, dtype=np.float32).view(np.uint32)) & 1 == 0
        if best is None or d < best[0] or (d == best[0] and even):
            best = (d, cand)
    return float(best[1])


def fused_tie_inputs(scale, zb, qmin, qmax, count):
    """Up to `count` inputs x (float32) for which PyTorch's backward grid value differs
    between one rounding of zb + x * inv_scale (a fused multiply-add, what its CPU kernel
    computes) and two roundings (product, then sum): the rounded product or the rounded
    sum lands on a half-integer that the exact value is not. Targets: the half-integers
    just beyond both grid ends first (the dx mask flips there), then interior ones spread
    over the grid; a few ulps are searched on each side of each target."""
    import fractions
    import numpy as np
    F = fractions.Fraction
    inv = f32(F(1) / F(scale))
    n = qmax - qmin
    stride = max(1, n // 97)
    halves = [qmax + 0.5, qmin - 0.5] + [qmin + 0.5 + k for k in range(0, n, stride)]
    out = []
    for target in halves:
        x0 = np.float32((target - zb) / inv)
        here = 0
        for step in range(0, 16):
            for sign in (1.0, -1.0):
                cand = x0
                for _ in range(step):
                    cand = np.nextafter(cand, np.float32(sign * np.inf))
                prod = F(float(cand)) * F(inv)
                if np.rint(f32(F(f32(prod)) + zb)) != np.rint(f32(prod + zb)) and float(cand) not in out:
                    out.append(float(cand))
                    here += 1
            if here >= 2:
                break
        if len(out) >= count:
            break
    if len(out) < 2:
        raise RuntimeError("no fused/unfused rounding difference found for scale %r" % scale)
    return torch.tensor(out[:count], dtype=torch.float32)


def learnable_tie_cases(f):
    # One element per scale (per channel along axis 1 of [1, C], per tensor over [1]) and
    # grad_factor 1, so each reduced gradient is a single term and must match bit for bit.
    # Zero points are non-zero and non-integer (PyTorch rounds them itself).
    channel_specs = [(0, 255, 0.02, 3.2), (0, 15, 0.07, 7.5), (-128, 127, 0.013, -4.4), (0, 255, 0.031, 128.5),
                     (-8, 7, 0.11, 2.6)]
    for i, (qmin, qmax, s, z) in enumerate(channel_specs):
        sf = f32(s)
        zb = min(max(float(torch.round(torch.tensor(z))), qmin), qmax)
        x = fused_tie_inputs(sf, zb, qmin, qmax, 16)
        c = x.numel()
        scale = torch.full((c,), sf, dtype=torch.float32)
        zp = torch.full((c,), z, dtype=torch.float32)
        learnable(f, "lsq_tie_channel_%d" % i, (1, c), 1, qmin, qmax, scale, zp, 0, x.reshape(1, c))
    # per tensor: the example of issue 12 first, then inputs found as above
    learnable(f, "lsq_tie_tensor_0", (1,), -1, 0, 255, torch.tensor([0.02]), torch.tensor([3.0]), 0,
              torch.tensor([2.5500002]), torch.tensor([1.3783032]))
    tensor_specs = [(0, 255, 0.02, 3.4), (0, 15, 0.3, 5.0), (-128, 127, 0.05, -2.5), (0, 255, 0.0123, 200.7)]
    for i, (qmin, qmax, s, z) in enumerate(tensor_specs):
        sf = f32(s)
        zb = math.trunc(min(max(z + 0.5, qmin), qmax))  # PyTorch's per-tensor backward zero point
        for j, xv in enumerate(fused_tie_inputs(sf, zb, qmin, qmax, 3).tolist()):
            learnable(f, "lsq_tie_tensor_%d_%d" % (i + 1, j), (1,), -1, qmin, qmax, torch.tensor([sf]),
                      torch.tensor([z]), 0, torch.tensor([xv]))


def main():
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "torch_fake_quantize.txt"), "w") as f:
        f.write("# generated by tools/torch_golden.py with torch %s\n" % torch.__version__)
        per_tensor_cases(f)
        per_channel_cases(f)
    with open(os.path.join(OUT, "torch_learnable.txt"), "w") as f:
        f.write("# generated by tools/torch_golden.py with torch %s\n" % torch.__version__)
        learnable_cases(f)
        learnable_tie_cases(f)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
