#!/usr/bin/env python3
"""One distillation step in PyTorch, for `distill train` to reproduce: a teacher and a student
ResNet-18-FPN layout (torchvision's BasicBlock and FeaturePyramidNetwork; the teacher at widths
12-96, the student at 8-64, both with 16-channel FPN levels and a small shared classification
head), BatchNormalization frozen (eval mode), `mse` on the three FPN levels plus sigmoid `kd`
(temperature 2, weight 0.5) on the three class maps, SGD (lr 0.05, momentum 0.9, weight decay 1e-4 on
parameters of rank 2 and more, as distill does) for one step. Every parameter holds its own random value (so no exporter merges any).

Writes Tests/Fixtures/distill_step/: teacher.onnx, student.onnx, data/sample_0.npy and
sample_1.npy (the batch, [3, 64, 64] each), expected.json (loss, terms named as distill names them)
and updated/NAME.npy for every student parameter after the step.

usage: make_distill_step_fixture.py   (needs torch, torchvision, onnx)
"""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "distill_step")
CLASSES = 3


class Detector(torch.nn.Module):
    def __init__(self, widths):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(widths[0])
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        inplanes, layers = widths[0], []
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            down = None
            if stride != 1 or inplanes != width:
                down = torch.nn.Sequential(torch.nn.Conv2d(inplanes, width, 1, stride, bias=False), torch.nn.BatchNorm2d(width))
            layers.append(torch.nn.Sequential(BasicBlock(inplanes, width, stride, down), BasicBlock(width, width)))
            inplanes = width
        self.layers = torch.nn.ModuleList(layers)
        self.fpn = FeaturePyramidNetwork(widths[1:], 16)
        self.cls = torch.nn.Conv2d(16, CLASSES, 3, padding=1)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        features = {}
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index >= 1:
                features[f"c{index + 2}"] = x
        levels = list(self.fpn(features).values())
        return tuple(levels) + tuple(self.cls(level) for level in levels)


def randomise(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.6, 1.4)
                module.weight.uniform_(0.6, 1.4)
                module.bias.uniform_(-0.1, 0.1)
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                module.bias.uniform_(-0.1, 0.1)


OUTPUTS = ["p3", "p4", "p5", "cls_p3", "cls_p4", "cls_p5"]


def export(model, path):
    torch.onnx.export(model, torch.rand(2, 3, 64, 64), path, opset_version=17, dynamo=False, do_constant_folding=False,
                      input_names=["images"], output_names=OUTPUTS, dynamic_axes={"images": {0: "batch"}})


def main():
    os.makedirs(os.path.join(OUT, "data"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "updated"), exist_ok=True)
    torch.manual_seed(0)
    teacher, student = Detector([12, 24, 48, 96]).eval(), Detector([8, 16, 32, 64]).eval()
    randomise(teacher)
    randomise(student)
    export(teacher, os.path.join(OUT, "teacher.onnx"))
    export(student, os.path.join(OUT, "student.onnx"))
    images = torch.rand(2, 3, 64, 64)
    for index in range(2):
        np.save(os.path.join(OUT, "data", f"sample_{index}.npy"), images[index].numpy())

    with torch.no_grad():
        t = teacher(images)
    s = student(images)
    terms = {}
    for index, name in enumerate(["p3", "p4", "p5"]):
        terms[f"mse:{name}"] = ((s[index] - t[index]) ** 2).mean()
    temperature, kd_weight = 2.0, 0.5
    for index, name in enumerate(["cls_p3", "cls_p4", "cls_p5"]):
        zs, zt = s[3 + index] / temperature, t[3 + index] / temperature
        terms[f"kd:{name}"] = kd_weight * F.binary_cross_entropy_with_logits(zs, torch.sigmoid(zt)) * temperature ** 2
    loss = sum(terms.values())
    # distill's default: no weight decay on 1-D parameters (biases, BatchNormalization scale and bias).
    decayed = [p for p in student.parameters() if p.dim() > 1]
    plain = [p for p in student.parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": 1e-4}, {"params": plain, "weight_decay": 0.0}],
                                lr=0.05, momentum=0.9)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    # ONNX initializer names of the student's parameters: the exporter keeps PyTorch's names here.
    import onnx
    names = {t.name for t in onnx.load(os.path.join(OUT, "student.onnx")).graph.initializer}
    updated = {}
    for name, parameter in student.named_parameters():
        if name not in names:
            raise SystemExit(f"{name} is not an initializer of the exported student")
        file = name.replace("/", "_") + ".npy"
        np.save(os.path.join(OUT, "updated", file), parameter.detach().numpy())
        updated[name] = file
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"loss": float(loss), "terms": {k: float(v) for k, v in terms.items()}, "updated": updated}, f, indent=1, sort_keys=True)
    print(f"loss {float(loss):.6f}; {len(updated)} parameters; terms {json.dumps({k: round(float(v), 6) for k, v in terms.items()})}")


if __name__ == "__main__":
    main()
