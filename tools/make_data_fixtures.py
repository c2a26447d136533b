#!/usr/bin/env python3
"""Writes Tests/Fixtures/data/: images of every PNG and JPEG colour type, JPEGs with EXIF
orientations 1-8 (both TIFF byte orders), a huge-header PNG and JPEG, truncated files, and a small
YOLO dataset. For each decodable image, `<name>.rgb` holds the upright RGB8 pixels Pillow gives
(`ImageOps.exif_transpose(...).convert("RGB")`; for 16-bit PNGs, which Pillow opens as 32-bit
integers for grey, the high byte of each stored sample, which is what Pillow's RGB(A) 16-bit
decoders keep), and manifest.json lists name, size and tolerance. Deterministic; needs numpy and
Pillow."""
import json
import os
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "data")
W, H = 24, 16


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, samples, color_type, bit_depth, width, height):
    """A minimal PNG encoder (filter 0 on every row) for what Pillow cannot write: 16-bit colour."""
    raw = b"".join(b"\x00" + samples[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_interlaced_png(path, rgb):
    """An Adam7-interlaced 8-bit RGB PNG (Pillow writes none)."""
    height, width = rgb.shape[:2]
    raw = b""
    for x0, y0, dx, dy in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 1)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def picture(width=W, height=H):
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), (xx * 7 + yy * 13) % 256], axis=-1)
    rgb[2:6, 3:9] = [250, 20, 40]  # an asymmetric mark: orientation mistakes show
    return rgb.astype(np.uint8)


def exif_bytes(orientation, big_endian):
    order = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(order + "HI", 42, 8)
    tiff += struct.pack(order + "H", 1) + struct.pack(order + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(order + "I", 0)
    return b"Exif\x00\x00" + tiff


# The transpose that makes the stored image upright for each orientation, and its inverse.
UPRIGHT = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}
INVERSE = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
           5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = []

    def record(name, reference, tolerance):
        reference = np.ascontiguousarray(reference, dtype=np.uint8)
        reference.tofile(os.path.join(OUT, name + ".rgb"))
        manifest.append({"file": name, "width": int(reference.shape[1]), "height": int(reference.shape[0]), "tolerance": tolerance})

    def pillow(name):
        with Image.open(os.path.join(OUT, name)) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))

    rgb = picture()
    grey = (rgb[..., 0].astype(np.uint16) * 3 + rgb[..., 1].astype(np.uint16) * 5) // 8
    alpha = ((np.arange(W)[None, :] * 11 + np.arange(H)[:, None] * 5) % 256).astype(np.uint8) * np.ones((H, 1), np.uint8)
    alpha[0, 0] = 0  # a fully transparent pixel keeps its stored colour

    eight_bit = {
        "grey1.png": Image.fromarray(grey.astype(np.uint8)).convert("1"),
        "grey8.png": Image.fromarray(grey.astype(np.uint8), "L"),
        "greyalpha8.png": Image.fromarray(np.dstack([grey.astype(np.uint8), alpha]), "LA"),
        "rgb8.png": Image.fromarray(rgb, "RGB"),
        "rgba8.png": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
        "palette8.png": Image.fromarray(rgb, "RGB").quantize(colors=200, dither=Image.Dither.NONE),
        "palette4.png": Image.fromarray(rgb, "RGB").quantize(colors=16, dither=Image.Dither.NONE),
    }
    for name, image in eight_bit.items():
        options = {"bits": 4} if name == "palette4.png" else {}
        image.save(os.path.join(OUT, name), **options)
    transparent = Image.fromarray(rgb, "RGB").quantize(colors=64, dither=Image.Dither.NONE)
    transparent.info["transparency"] = 3
    transparent.save(os.path.join(OUT, "palette_trns.png"), transparency=3)
    for name in [*eight_bit, "palette_trns.png"]:
        record(name, pillow(name), 0)

    deep = rgb.astype(np.uint16) * 257 + (np.arange(W)[None, :, None] * 37 % 256).astype(np.uint16)
    deep_alpha = alpha.astype(np.uint16) * 256 + 99
    deep_grey = grey.astype(np.uint16) * 256 + 200
    write_png(os.path.join(OUT, "grey16.png"), deep_grey.astype(">u2"), 0, 16, W, H)
    write_png(os.path.join(OUT, "greyalpha16.png"), np.dstack([deep_grey, deep_alpha]).astype(">u2"), 4, 16, W, H)
    write_png(os.path.join(OUT, "rgb16.png"), deep.astype(">u2"), 2, 16, W, H)
    write_png(os.path.join(OUT, "rgba16.png"), np.dstack([deep, deep_alpha]).astype(">u2"), 6, 16, W, H)
    high_grey = np.repeat((deep_grey >> 8)[..., None], 3, axis=-1)
    record("grey16.png", high_grey, 0)  # Pillow's convert("RGB") of its "I;16" clips to 255 instead
    assert np.array_equal(pillow("greyalpha16.png"), high_grey), "greyalpha16.png: Pillow does not keep the high byte"
    record("greyalpha16.png", high_grey, 0)
    write_interlaced_png(os.path.join(OUT, "interlaced.png"), rgb)
    record("interlaced.png", pillow("interlaced.png"), 0)
    assert np.array_equal(pillow("interlaced.png"), rgb)
    levels = (grey.astype(np.uint8) >> 6).reshape(H, W // 4, 4)
    packed = (levels[..., 0] << 6 | levels[..., 1] << 4 | levels[..., 2] << 2 | levels[..., 3]).astype(np.uint8)
    write_png(os.path.join(OUT, "grey2.png"), packed, 0, 2, W, H)
    record("grey2.png", pillow("grey2.png"), 0)
    for name in ("rgb16.png", "rgba16.png"):
        assert np.array_equal(pillow(name), deep >> 8), name + ": Pillow does not keep the high byte"
        record(name, pillow(name), 0)

    Image.fromarray(grey.astype(np.uint8), "L").save(os.path.join(OUT, "grey.jpg"), quality=95)
    Image.fromarray(rgb, "RGB").save(os.path.join(OUT, "rgb.jpg"), quality=95)
    Image.fromarray(rgb, "RGB").convert("CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=95)
    for name in ("grey.jpg", "rgb.jpg", "cmyk.jpg"):
        record(name, pillow(name), 3)

    upright = Image.fromarray(picture(20, 12), "RGB")
    for orientation in range(1, 9):
        stored = upright if INVERSE[orientation] is None else upright.transpose(INVERSE[orientation])
        for big_endian in (False, True):
            name = f"exif{orientation}_{'mm' if big_endian else 'ii'}.jpg"
            stored.save(os.path.join(OUT, name), quality=95, exif=exif_bytes(orientation, big_endian))
            reference = pillow(name)
            assert reference.shape == (12, 20, 3), name
            record(name, reference, 3)

    with open(os.path.join(OUT, "huge.png"), "wb") as f:
        ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    small = open(os.path.join(OUT, "rgb.jpg"), "rb").read()
    sof = small.index(b"\xff\xc0")
    huge = small[: sof + 5] + struct.pack(">HH", 60000, 60000) + small[sof + 9:]
    open(os.path.join(OUT, "huge.jpg"), "wb").write(huge)

    big = picture(64, 64)
    big = (big.astype(np.int32) + np.random.default_rng(0).integers(0, 60, big.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(big).save(os.path.join(OUT, "whole.png"))
    Image.fromarray(big).save(os.path.join(OUT, "whole.jpg"), quality=90)
    for name in ("whole.png", "whole.jpg"):
        data = open(os.path.join(OUT, name), "rb").read()
        open(os.path.join(OUT, "truncated" + name[5:]), "wb").write(data[: len(data) * 6 // 10])
        os.remove(os.path.join(OUT, name))

    yolo = os.path.join(OUT, "yolo")
    os.makedirs(os.path.join(yolo, "images", "train"), exist_ok=True)
    os.makedirs(os.path.join(yolo, "labels", "train"), exist_ok=True)
    # a.jpg is stored 30x40 with orientation 6: upright it is 40x30, and its labels are relative to that.
    Image.fromarray(picture(40, 30)).transpose(INVERSE[6]).save(os.path.join(yolo, "images", "train", "a.jpg"), exif=exif_bytes(6, False))
    Image.fromarray(picture(32, 32)).save(os.path.join(yolo, "images", "train", "b.png"))
    Image.fromarray(picture(20, 20)).save(os.path.join(yolo, "images", "train", "c.jpg"))
    with open(os.path.join(yolo, "labels", "train", "a.txt"), "w") as f:
        f.write("\n".join([
            "0 0.5 0.5 0.25 0.5",          # 1: kept, [15, 7.5, 25, 22.5]
            "1 0.5 0.5 0.2",               # 2: 4 numbers
            "3 0.5 0.5 0.1 0.1",           # 3: class out of range (3 classes)
            "x 0.5 0.5 0.1 0.1",           # 4: non-numeric
            "",                            # 5: blank, ignored
            "2 0.9 0.9 0.4 0.4",           # 6: clipped to [28, 21, 40, 30]
            "1 0.5 0.5 0.001 0.3",         # 7: 0.04 px wide: degenerate
            "1 1.2 0.5 0.2 0.2",           # 8: wholly right of the image: degenerate after clipping
            "0 0.5 0.5 nan 0.1",           # 9: not finite
            "2 0.1 0.1 0.3 0.1 0.2 0.4",   # 10: segment, box [4, 3, 12, 12]
            "1.5 0.5 0.5 0.1 0.1",         # 11: class not an integer
        ]) + "\n")
    with open(os.path.join(yolo, "labels", "train", "b.txt"), "w", newline="") as f:
        f.write("0 0.25 0.25 0.5 0.5\r\n1 0.75 0.75 0.25 0.25\r\n")  # [0, 0, 16, 16], [20, 20, 28, 28]
    with open(os.path.join(yolo, "names.txt"), "w") as f:
        f.write("person\ncar\n\ndog\n")
    with open(os.path.join(yolo, "data.yaml"), "w") as f:
        f.write("path: .\ntrain: images/train\nnames:\n  0: person\n  1: car\n  2: dog\n")
    with open(os.path.join(yolo, "list.txt"), "w") as f:
        f.write("images/train/a.jpg\nimages/train/missing.jpg\n")

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    total = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(OUT) for n in names)
    print(f"wrote {len(manifest)} reference images, {total} bytes")


if __name__ == "__main__":
    main()
