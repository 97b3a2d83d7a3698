#!/usr/bin/python3
"""Write a PyTorch nn.Sequential as a quant model bundle (docs/model_bundle.md).

    from export_bundle import export_bundle
    export_bundle(model.eval(), (1, 28, 28), "my_bundle")      # then: quant eval --model my_bundle ...

Supports Linear, Conv2d, BatchNorm2d, ReLU, ReLU6, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1)
and Flatten; anything the bundle cannot express (dilation, ceil_mode, other layers) is
written as is and rejected by the loader with a message naming the layer and the field.
"""
import json, os, numpy as np, torch.nn as nn

def export_bundle(model, input_shape, out):
    kinds = {nn.Linear: "linear", nn.Conv2d: "conv2d", nn.BatchNorm2d: "batchnorm2d", nn.ReLU: "relu", nn.ReLU6: "relu6",
             nn.MaxPool2d: "maxpool2d", nn.AvgPool2d: "avgpool2d", nn.AdaptiveAvgPool2d: "global_avgpool", nn.Flatten: "flatten"}
    os.makedirs(out, exist_ok=True); layers = []
    for i, m in enumerate(model):
        d = {"type": kinds.get(type(m), type(m).__name__), "name": f"l{i}"}
        if isinstance(m, (nn.Linear, nn.Conv2d)): d["bias"] = None
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size not in (1, (1, 1)): d["type"] = "adaptive_avgpool2d"
        for k, t in m.state_dict().items():
            if k != "num_batches_tracked": np.save(f"{out}/l{i}.{k}.npy", t.detach().float().numpy()); d[k] = f"l{i}.{k}.npy"
        if isinstance(m, nn.Conv2d): d.update(stride=m.stride, padding=m.padding, groups=m.groups, dilation=m.dilation)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)): d.update(kernel=m.kernel_size, stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode)
        if isinstance(m, nn.BatchNorm2d): d["eps"] = m.eps
        layers.append(d)
    with open(f"{out}/model.json", "w") as f:
        json.dump({"format": "quant-model", "version": 1, "input_shape": list(input_shape), "layers": layers}, f, indent=1)
