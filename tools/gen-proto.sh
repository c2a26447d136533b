#!/usr/bin/env bash
# Regenerates proto/ (the COnnx C target) from the ONNX schema that Debian's libonnx-dev installs.
# Run after upgrading libonnx-dev; the output is committed so builds never run protoc-c.
set -euo pipefail
cd "$(dirname "$0")/.."
schema=/usr/include/onnx/onnx.proto
command -v protoc-c >/dev/null || { echo "protoc-c missing: apt-get install protobuf-c-compiler" >&2; exit 1; }
[ -f "$schema" ] || { echo "$schema missing: apt-get install libonnx-dev" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp "$schema" "$work/onnx.proto"
(cd "$work" && protoc-c --c_out=. onnx.proto)
sed 's|#include "onnx.pb-c.h"|#include "include/onnx.pb-c.h"|' "$work/onnx.pb-c.c" > proto/onnx.pb-c.c
cp "$work/onnx.pb-c.h" proto/include/onnx.pb-c.h
echo "generated proto/onnx.pb-c.c and proto/include/onnx.pb-c.h from $schema ($(dpkg-query -W -f='${Version}' libonnx-dev 2>/dev/null || echo unknown version))"
