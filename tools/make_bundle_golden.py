#!/usr/bin/python3
"""Golden data for examples/tests/test_model_bundle.cpp: a small nn.Sequential with every
layer type of the model bundle, exported with tools/export_bundle.py (so the exporter is
tested too), an input batch and PyTorch's logits.

Writes examples/tests/data/golden_bundle/ (model.json + .npy tensors), golden_input.npy and
golden_logits.npy there (committed; the tests never need torch).

Usage (Debian 12: apt-get install python3-torch):  /usr/bin/python3 tools/make_bundle_golden.py
Deterministic: seeded generator, one thread.
"""
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_bundle import export_bundle  # noqa: E402

torch.manual_seed(20261127)
torch.set_num_threads(1)

model = nn.Sequential(
    nn.Conv2d(3, 8, 3, stride=1, padding=1, bias=False),  # 8x12x12
    nn.BatchNorm2d(8, eps=1e-3),
    nn.ReLU(),
    nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise, 8x6x6
    nn.BatchNorm2d(8),
    nn.ReLU6(),
    nn.Conv2d(8, 6, (2, 3), stride=(1, 2), padding=(1, 0), groups=2),  # grouped, 6x7x2
    nn.MaxPool2d(3, stride=1, padding=1),  # 6x7x2
    nn.AvgPool2d(2, stride=1, padding=1),  # 6x8x3
    nn.Conv2d(6, 5, 1),  # pointwise
    nn.ReLU(),
    nn.MaxPool2d(2),  # 5x4x1
    nn.Conv2d(5, 7, 3, padding=1),  # 7x4x1
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(7, 9),
    nn.ReLU(),
    nn.Linear(9, 4, bias=False),
)
# BN statistics and affine parameters away from their defaults, so eval mode matters.
with torch.no_grad():
    for m in model:
        if isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 2.0)
model.eval()

x = torch.randn(6, 3, 12, 12)
with torch.no_grad():
    logits = model(x)

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, "..", "examples", "tests", "data")
bundle = os.path.join(data, "golden_bundle")
shutil.rmtree(bundle, ignore_errors=True)
export_bundle(model, (3, 12, 12), bundle)
np.save(os.path.join(data, "golden_input.npy"), x.numpy().astype(np.float32))
np.save(os.path.join(data, "golden_logits.npy"), logits.numpy().astype(np.float32))
print("wrote", bundle, "input", tuple(x.shape), "logits", tuple(logits.shape))
