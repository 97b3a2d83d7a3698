#!/usr/bin/python3
"""Times `quant eval` (examples/common/model_runner.hpp) against PyTorch on the same bundle.

    /usr/bin/python3 tools/bench_runner_vs_torch.py --quant build/examples/quant [--model DIR] [--n 10000]

Without --model it builds the demo's MobileNet-style BN network (conv3x3 1->16 +BN+ReLU,
depthwise 3x3 +BN+ReLU, pointwise 16->32 +BN+ReLU, max-pool 2, depthwise 3x3 +BN+ReLU,
pointwise 32->64 +BN+ReLU, max-pool 2, global average pool, linear 64->10) with seeded random
weights and BN statistics, and exports it with tools/export_bundle.py. Either way the torch
model is rebuilt from the bundle's model.json, so both run the same weights; the script
checks that their logits agree before timing.

Timing: the same random inputs [n, ...input_shape], float32, inference mode. torch: eval(),
torch.inference_mode(), one forward over batches of --batch, best of --repeat, with
torch.set_num_threads(t). quant: the forward-pass time `quant eval` prints (the run_model
call, without file I/O; its CPU time is the whole process's, an upper bound), best of --repeat,
with OMP_NUM_THREADS=t (quant::num_threads();
BLAS pinned to one thread per chunk). t = 1 and 2.
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_bundle import export_bundle  # noqa: E402


def demo_bn_network():
    def block(c_in, c_out, groups=1, k=3):
        return [nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    layers = (block(1, 16) + block(16, 16, groups=16) + block(16, 32, k=1) + [nn.MaxPool2d(2)] +
              block(32, 32, groups=32) + block(32, 64, k=1) + [nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                                               nn.Linear(64, 10)])
    m = nn.Sequential(*layers)
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, nn.BatchNorm2d):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.3, 0.3)
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 2.0)
    return m.eval()


def pair(v):
    return tuple(v) if isinstance(v, list) else (v, v)


def torch_from_bundle(d):
    spec = json.load(open(os.path.join(d, "model.json")))
    mods = []
    t = lambda name: torch.from_numpy(np.load(os.path.join(d, name)).astype(np.float32))
    for l in spec["layers"]:
        k = l["type"]
        if k == "linear":
            w = t(l["weight"])
            m = nn.Linear(w.shape[1], w.shape[0], bias=l.get("bias") is not None)
        elif k == "conv2d":
            w = t(l["weight"])
            g = l.get("groups", 1)
            m = nn.Conv2d(w.shape[1] * g, w.shape[0], tuple(w.shape[2:]), stride=pair(l.get("stride", 1)),
                          padding=pair(l.get("padding", 0)), groups=g, bias=l.get("bias") is not None)
        elif k == "batchnorm2d":
            m = nn.BatchNorm2d(t(l["weight"]).shape[0], eps=l.get("eps", 1e-5))
        elif k in ("maxpool2d", "avgpool2d"):
            cls = nn.MaxPool2d if k == "maxpool2d" else nn.AvgPool2d
            m = cls(pair(l["kernel"]), stride=pair(l.get("stride", l["kernel"])), padding=pair(l.get("padding", 0)))
        else:
            m = {"relu": nn.ReLU, "relu6": nn.ReLU6, "flatten": nn.Flatten,
                 "global_avgpool": lambda: nn.AdaptiveAvgPool2d(1)}[k]()
        with torch.no_grad():
            for key in ("weight", "bias", "running_mean", "running_var"):
                if l.get(key) is not None and hasattr(m, key):
                    getattr(m, key).copy_(t(l[key]))
        mods.append(m)
    return nn.Sequential(*mods).eval(), spec["input_shape"]


def time_torch(model, x, batch, threads, repeat):
    """Best wall time and best CPU time (all threads of this process) of one forward pass."""
    torch.set_num_threads(threads)
    best, best_cpu = float("inf"), float("inf")
    with torch.inference_mode():
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            outs = [model(x[i:i + batch]) for i in range(0, x.shape[0], batch)]
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
    return best, best_cpu, torch.cat(outs).numpy()


def time_quant(quant, bundle, xfile, batch, threads, repeat, logits_out):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([quant, "eval", "--model", bundle, "--input", xfile, "--batch", str(batch),
                            "--logits-out", logits_out], env=env, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, float(re.search(r"forward pass ([0-9.]+) s", r.stderr).group(1)))
        # whole process (includes loading the input and writing the logits): an upper bound
        best_cpu = min(best_cpu, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))
    return best, best_cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quant", required=True, help="the quant binary")
    ap.add_argument("--model", help="bundle directory (default: the demo's BN network, random weights)")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = a.model
        if bundle is None:
            bundle = os.path.join(tmp, "bn_net")
            export_bundle(demo_bn_network(), (1, 28, 28), bundle)
        model, shape = torch_from_bundle(bundle)
        x = torch.randn(a.n, *shape)
        xfile = os.path.join(tmp, "x.npy")
        np.save(xfile, x.numpy())
        lfile = os.path.join(tmp, "logits.npy")
        print(f"torch {torch.__version__}, {a.n} samples {tuple(shape)}, batch {a.batch}, best of {a.repeat}")
        for threads in (1, 2):
            tt, ct, ref = time_torch(model, x, a.batch, threads, a.repeat)
            tq, cq = time_quant(a.quant, bundle, xfile, a.batch, threads, a.repeat, lfile)
            got = np.load(lfile)
            err = np.max(np.abs(got - ref)) / max(1e-6, np.max(np.abs(ref)))
            print(f"threads {threads}: wall torch {tt:.3f} s, quant {tq:.3f} s (quant/torch {tq / tt:.2f}); "
                  f"CPU torch {ct:.3f} s, quant {cq:.3f} s (whole process; quant/torch {cq / ct:.2f})"
                  f"  (max |logit diff| / max |logit| = {err:.1e})")


if __name__ == "__main__":
    main()
