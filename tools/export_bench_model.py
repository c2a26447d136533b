#!/usr/bin/env python3
"""Exports the benchmark models: torchvision RetinaNet's ResNet-50-FPN backbone and head (no
image transform, no post-processing; random weights, no download) with a dynamic batch axis,
and the same with ResNet-18. Outputs go to the directory given (default .build-fixtures/bench).

usage: export_bench_model.py [OUT_DIR]
"""
import os
import sys

import torch
import torchvision
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


class BackboneAndHead(torch.nn.Module):
    def __init__(self, detector):
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head

    def forward(self, images):
        features = list(self.backbone(images).values())
        outputs = self.head(features)
        return outputs["cls_logits"], outputs["bbox_regression"]


def export(detector, path):
    torch.manual_seed(0)
    model = BackboneAndHead(detector.eval()).eval()
    torch.onnx.export(
        model, torch.rand(1, 3, 320, 320), path, opset_version=17, dynamo=False, input_names=["images"],
        output_names=["cls_logits", "bbox_regression"],
        dynamic_axes={"images": {0: "batch"}, "cls_logits": {0: "batch"}, "bbox_regression": {0: "batch"}})
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB)")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else ".build-fixtures/bench"
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    retinanet = torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None)
    export(retinanet, os.path.join(out, "retinanet_r50_fpn_core.onnx"))
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5,
                                   returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    small = torchvision.models.detection.RetinaNet(backbone, num_classes=91)
    export(small, os.path.join(out, "retinanet_r18_fpn_core.onnx"))


if __name__ == "__main__":
    main()
