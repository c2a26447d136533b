#!/usr/bin/env python3
"""Dumps whole-model gradient references from PyTorch autograd: an eval-mode model exported to
ONNX, an input, random weights r for each output, and d(sum_k sum(r_k * y_k))/d(parameter) for every
parameter and for the input. Writes Tests/Fixtures/gradients/NAME/ for

- fpn_small: a small FPN detector (conv, BatchNormalization in eval mode with random statistics,
  ReLU, strided convs, nearest upsampling, lateral adds, a shared head with
  Transpose/Reshape/Concat/Sigmoid); initializer names equal the PyTorch parameter names.
- resnet18_fpn: torchvision's ResNet-18 layout (BasicBlock, [2, 2, 2, 2], narrowed to widths
  8-64 to keep the fixture small) under torchvision's FPN (IntermediateLayerGetter + FeaturePyramidNetwork
  + LastLevelMaxPool), with BatchNorm2d left as initialised (scale 1, bias 0, mean 0, var 1). The
  TorchScript exporter merges equal-valued initializers in eval mode, so one ONNX tensor feeds
  many BatchNormalizations and conv biases; `readers` in the manifest names, for every PyTorch
  parameter, the ONNX node and input slot that read it (found by a second export in which every
  parameter has its own value), so a test can find each layer's own copy after untying.

usage: make_gradient_fixture.py [fpn_small|resnet18_fpn ...]   (default: both; needs torch, torchvision, onnx)
"""
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import torch
from onnx import numpy_helper

ROOT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "gradients")


def block(cin, cout, stride):
    return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout), torch.nn.ReLU())


class SmallFPN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = block(3, 8, 2)
        self.c3 = block(8, 12, 2)
        self.c4 = block(12, 16, 2)
        self.lateral3 = torch.nn.Conv2d(12, 8, 1)
        self.lateral4 = torch.nn.Conv2d(16, 8, 1)
        self.smooth = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.cls = torch.nn.Conv2d(8, 3, 3, padding=1)
        self.box = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        c3 = self.c3(self.stem(x))
        c4 = self.c4(c3)
        p4 = self.lateral4(c4)
        p3 = self.lateral3(c3) + torch.nn.functional.interpolate(p4, scale_factor=2.0, mode="nearest")
        levels = [torch.relu(self.smooth(p3)), torch.relu(self.smooth(p4))]
        scores = torch.cat([self.cls(p).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 3) for p in levels], 1)
        boxes = torch.cat([self.box(p).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4) for p in levels], 1)
        return torch.sigmoid(scores), boxes


def save(tensor, path, name):
    proto = numpy_helper.from_array(np.ascontiguousarray(tensor.detach().numpy().astype(np.float32)), name=name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


class NarrowResNet18(torch.nn.Module):
    """torchvision's ResNet-18 (its BasicBlock and layer layout) at widths 8, 16, 32, 64."""

    def __init__(self):
        super().__init__()
        from torchvision.models.resnet import BasicBlock
        self.conv1 = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        widths, inplanes = [8, 16, 32, 64], 8
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != width:
                downsample = torch.nn.Sequential(torch.nn.Conv2d(inplanes, width, 1, stride, bias=False), torch.nn.BatchNorm2d(width))
            blocks = [BasicBlock(inplanes, width, stride, downsample), BasicBlock(width, width)]
            setattr(self, f"layer{index + 1}", torch.nn.Sequential(*blocks))
            inplanes = width


class BackboneOutputs(torch.nn.Module):
    def __init__(self, backbone):
        super().__init__()
        self.body = backbone.body
        self.fpn = backbone.fpn

    def forward(self, x):
        return tuple(self.fpn(self.body(x)).values())


def resnet18_fpn():
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
    backbone = BackboneWithFPN(NarrowResNet18(), {f"layer{i}": str(i - 1) for i in range(1, 5)}, [8, 16, 32, 64], 16,
                               extra_blocks=LastLevelMaxPool())
    return BackboneOutputs(backbone)


def readers_by_parameter(model, x):
    """For every parameter: the (node name, input slot) reading it, from an export in which each
    parameter holds its own value (so none is merged)."""
    saved = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.rand_like(p) * 1e-3)
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "distinct.onnx")
        torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, do_constant_folding=False,
                          input_names=["images"])
        graph = onnx.load(path).graph
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(saved[name])
    readers = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if name in saved and name not in readers:
                readers[name] = [node.name, slot]
    missing = sorted(set(saved) - set(readers))
    if missing:
        raise SystemExit(f"parameters without a reader in the distinct export: {missing}")
    return readers


def write_fixture(name, model, x, output_names=None, readers=False):
    out = os.path.join(ROOT, name)
    os.makedirs(out, exist_ok=True)
    model.eval()
    x = x.clone().requires_grad_(True)
    reader_map = readers_by_parameter(model, x.detach()) if readers else None
    path = os.path.join(out, "model.onnx")
    torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, do_constant_folding=False,
                      input_names=["images"], output_names=output_names)
    outputs = model(x)
    weights = [torch.rand_like(y) * 2 - 1 for y in outputs]
    loss = sum((w * y).sum() for w, y in zip(weights, outputs))
    loss.backward()
    save(x, os.path.join(out, "input_0.pb"), "images")
    for i, w in enumerate(weights):
        save(w, os.path.join(out, f"weight_{i}.pb"), f"weight_{i}")
    initializers = {t.name for t in onnx.load(path).graph.initializer}
    manifest = {"loss": float(loss), "gradients": {}}
    save(x.grad, os.path.join(out, "grad_images.pb"), "images")
    manifest["gradients"]["images"] = "grad_images.pb"
    for index, (parameter_name, parameter) in enumerate(model.named_parameters()):
        if reader_map is None and parameter_name not in initializers:
            raise SystemExit(f"parameter {parameter_name} is not an ONNX initializer; initializers: {sorted(initializers)}")
        file = f"grad_{index}.pb"
        save(parameter.grad, os.path.join(out, file), parameter_name)
        manifest["gradients"][parameter_name] = file
    if reader_map is not None:
        manifest["readers"] = reader_map
        manifest["merged"] = len(manifest["gradients"]) - 1 - len(initializers & set(manifest["gradients"]))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {out}: loss {float(loss):.6f}, {len(manifest['gradients'])} gradients")


def main():
    which = sys.argv[1:] or ["fpn_small", "resnet18_fpn"]
    if "fpn_small" in which:
        torch.manual_seed(0)
        model = SmallFPN()
        for module in model.modules():  # non-trivial frozen statistics
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
        model.eval()
        x = torch.rand(2, 3, 32, 32)
        write_fixture("fpn_small", model, x, output_names=["scores", "boxes"])
    if "resnet18_fpn" in which:
        torch.manual_seed(0)
        model = resnet18_fpn().eval()
        write_fixture("resnet18_fpn", model, torch.rand(2, 3, 64, 64), readers=True)


if __name__ == "__main__":
    main()
