#!/usr/bin/env python3
"""Writes Tests/Fixtures/images/: a 48x64 RGB test picture as PNG and JPEG, and the tensors
`distill run` must make of them (resized to 32x40 with PyTorch's bilinear interpolation,
align_corners=False, no antialias; scaled to [0,1]; normalised with ImageNet mean/std), decoded
with Pillow. Deterministic; needs numpy, Pillow and torch."""
import os

import numpy as np
import torch
from PIL import Image

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "images")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def expected(path):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)  # H, W, 3
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    y = torch.nn.functional.interpolate(x, size=(32, 40), mode="bilinear", align_corners=False, antialias=False)
    y = torch.clamp(torch.round(y), 0, 255) / 255.0
    y = (y - torch.from_numpy(MEAN)[None, :, None, None]) / torch.from_numpy(STD)[None, :, None, None]
    return y.numpy().astype(np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    picture = np.stack([xx * 4 % 256, yy * 5 % 256, (xx + yy) * 3 % 256], axis=-1).astype(np.uint8)
    picture[10:30, 20:40] = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(picture).save(os.path.join(OUT, "pattern.png"))
    Image.fromarray(picture).save(os.path.join(OUT, "pattern.jpg"), quality=90)
    for name in ("pattern.png", "pattern.jpg"):
        np.save(os.path.join(OUT, name.replace(".", "_") + "_32x40.npy"), expected(os.path.join(OUT, name)))
    with open(os.path.join(OUT, "corrupt.png"), "wb") as f:
        f.write(open(os.path.join(OUT, "pattern.png"), "rb").read()[:60])
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
