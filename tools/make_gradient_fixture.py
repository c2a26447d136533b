#!/usr/bin/env python3
"""Dumps a whole-model gradient reference from PyTorch autograd: a small FPN detector (conv,
BatchNormalization in eval mode, ReLU, strided convs, nearest upsampling, lateral adds, a shared head
with Transpose/Reshape/Concat/Sigmoid), exported to ONNX with initializer names equal to the PyTorch
parameter names, plus an input, random weights r for each output, and d(sum(r * y))/d(parameter) for
every parameter and for the input. Writes Tests/Fixtures/gradients/fpn_small/.

usage: make_gradient_fixture.py   (needs torch, onnx)
"""
import json
import os

import numpy as np
import onnx
import torch
from onnx import numpy_helper

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "gradients", "fpn_small")


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


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    model = SmallFPN()
    for module in model.modules():  # non-trivial frozen statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    path = os.path.join(OUT, "model.onnx")
    torch.onnx.export(model, (x,), path, opset_version=17, dynamo=False, do_constant_folding=False,
                      input_names=["images"], output_names=["scores", "boxes"])
    outputs = model(x)
    weights = [torch.rand_like(y) * 2 - 1 for y in outputs]
    loss = sum((w * y).sum() for w, y in zip(weights, outputs))
    loss.backward()
    save(x, os.path.join(OUT, "input_0.pb"), "images")
    for i, w in enumerate(weights):
        save(w, os.path.join(OUT, f"weight_{i}.pb"), f"weight_{i}")
    initializers = {t.name for t in onnx.load(path).graph.initializer}
    manifest = {"loss": float(loss), "gradients": {}}
    save(x.grad, os.path.join(OUT, "grad_images.pb"), "images")
    manifest["gradients"]["images"] = "grad_images.pb"
    for index, (name, parameter) in enumerate(model.named_parameters()):
        if name not in initializers:
            raise SystemExit(f"parameter {name} is not an ONNX initializer; initializers: {sorted(initializers)}")
        file = f"grad_{index}.pb"
        save(parameter.grad, os.path.join(OUT, file), name)
        manifest["gradients"][name] = file
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(f"wrote {OUT}: loss {float(loss):.6f}, {len(manifest['gradients'])} gradients")


if __name__ == "__main__":
    main()
