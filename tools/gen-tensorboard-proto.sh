#!/usr/bin/env bash
# Regenerates proto/tensorboard/ (the CTensorBoard C target) with protoc-c from TensorBoard's own
# .proto files for Event and Summary, which are committed in proto/tensorboard/*.proto.
#
#   tools/gen-tensorboard-proto.sh                  regenerate the C code from the committed .proto files
#   tools/gen-tensorboard-proto.sh --update GITDIR [COMMIT]
#                                                   first re-copy the .proto files from a tensorflow/tensorboard
#                                                   git directory (bare or not) at COMMIT (default: HEAD)
#
# The .proto files import each other as "tensorboard/compat/proto/X.proto", so they are staged under
# that path for protoc-c, and the generated files are flattened: sources to proto/tensorboard/,
# headers to proto/tensorboard/include/, with their #include lines rewritten to match.
# The output is committed so builds never run protoc-c.
set -euo pipefail
cd "$(dirname "$0")/.."
out=proto/tensorboard
upstream_path=tensorboard/compat/proto
# The closed set of files that Event and Summary need (event -> summary -> histogram, tensor ->
# resource_handle, tensor_shape, types).
files=(event summary histogram tensor resource_handle tensor_shape types)

if [ "${1:-}" = "--update" ]; then
  gitdir=${2:?"--update needs a tensorflow/tensorboard git directory"}
  [ -d "$gitdir/.git" ] && gitdir="$gitdir/.git"
  commit=$(git --git-dir="$gitdir" rev-parse "${3:-HEAD}^{commit}")
  for f in "${files[@]}"; do
    git --git-dir="$gitdir" show "$commit:$upstream_path/$f.proto" > "$out/$f.proto"
  done
  git --git-dir="$gitdir" show "$commit:LICENSE" > "$out/LICENSE"
  sed -i "s|^Upstream commit: .*|Upstream commit: $commit|" "$out/README.md"
  echo "copied ${#files[@]} .proto files from tensorflow/tensorboard $commit"
fi

command -v protoc-c >/dev/null || { echo "protoc-c missing: apt-get install protobuf-c-compiler" >&2; exit 1; }
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/$upstream_path"
for f in "${files[@]}"; do cp "$out/$f.proto" "$work/$upstream_path/"; done
inputs=(); for f in "${files[@]}"; do inputs+=("$upstream_path/$f.proto"); done
(cd "$work" && protoc-c -I. --c_out=. "${inputs[@]}")
for f in "${files[@]}"; do
  sed -e "s|#include \"$upstream_path/\([a-z_]*\)\.pb-c\.h\"|#include \"include/\1.pb-c.h\"|" \
    "$work/$upstream_path/$f.pb-c.c" > "$out/$f.pb-c.c"
  sed -e "s|#include \"$upstream_path/\([a-z_]*\)\.pb-c\.h\"|#include \"\1.pb-c.h\"|" \
    "$work/$upstream_path/$f.pb-c.h" > "$out/include/$f.pb-c.h"
done
echo "generated ${#files[@]} sources in $out/ and headers in $out/include/ with $(protoc-c --version | head -1)"
