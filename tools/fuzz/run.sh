#!/usr/bin/env bash
# Fuzzes the ONNX import path (ModelFile.decode, then encode + decode of what decoded) with
# libFuzzer and AddressSanitizer for a bounded time.
#
#   tools/fuzz/run.sh [SECONDS]        default 60
#
# Builds Sources/DistillCore, Sources/DistillONNX and proto/ as they are right now (globbed at
# run time) plus tools/fuzz/FuzzImport.swift into .build-fuzz/fuzz-import, seeds a work corpus in
# .build-fuzz/corpus/ from the test fixtures, runs, and prints one summary line. Each new crash,
# timeout, OOM or leak is replayed and reported; one reproducer per distinct report is copied into
# tools/fuzz/findings/ (all of them stay in .build-fuzz/artifacts/).
#
# Exit status: 0 no finding, 1 the fuzzer found something, 2 build or usage error.
# Environment: FUZZ_VERBOSE=1 streams libFuzzer's output; FUZZ_ARGS adds libFuzzer flags;
# DISTILL_FUZZ_STRICT=1 also checks that encoding is stable after one round trip.
# To replay one input: SWIFT_BACKTRACE=enable=no .build-fuzz/fuzz-import tools/fuzz/findings/<file>
set -uo pipefail

seconds=${1:-60}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "usage: $0 [SECONDS]   (a positive whole number of seconds, default 60)" >&2
  exit 2
fi

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$root/.build-fuzz
findings=$root/tools/fuzz/findings
mkdir -p "$out/obj" "$out/modules" "$out/cmodules" "$out/artifacts" "$out/logs" "$out/corpus" "$findings"

swiftc=$(command -v swiftc) || { echo "fuzz: swiftc not found on PATH" >&2; exit 2; }
bindir=$(dirname "$(readlink -f "$swiftc")")
clang=$bindir/clang
[ -x "$clang" ] || clang=$(command -v clang) || { echo "fuzz: clang not found" >&2; exit 2; }

# ---- build -------------------------------------------------------------------------------------
mapfile -t core_sources < <(find Sources/DistillCore -name '*.swift' | LC_ALL=C sort)
mapfile -t onnx_sources < <(find Sources/DistillONNX -name '*.swift' | LC_ALL=C sort)
mapfile -t c_sources < <(find proto -maxdepth 1 -name '*.c' | LC_ALL=C sort)
mapfile -t c_headers < <(find proto/include -name '*.h' | LC_ALL=C sort)
harness=tools/fuzz/FuzzImport.swift
if [ ${#core_sources[@]} -eq 0 ] || [ ${#onnx_sources[@]} -eq 0 ] || [ ${#c_sources[@]} -eq 0 ]; then
  echo "fuzz: no sources found under Sources/DistillCore, Sources/DistillONNX or proto/" >&2
  exit 2
fi

# Swift language mode as Package.swift declares it (swiftLanguageModes / swiftLanguageVersions, first
# entry), else the tools version's default (6 for tools 6.x, 5 before); FUZZ_SWIFT_VERSION overrides.
language=${FUZZ_SWIFT_VERSION:-$(sed -n 's/.*swiftLanguage\(Modes\|Versions\): *\[ *\.v\([0-9]*\).*/\2/p' Package.swift | head -n 1)}
if [ -z "$language" ]; then
  tools=$(sed -n '1s/.*swift-tools-version: *\([0-9]*\).*/\1/p' Package.swift)
  language=$([ "${tools:-5}" -ge 6 ] && echo 6 || echo 5)
fi

sanitize_c=(-fsanitize=fuzzer-no-link,address -fno-omit-frame-pointer -g -O1)
sanitize_swift=(-sanitize=fuzzer,address -g -O -swift-version "$language")
cblas=(-Xcc "-fmodule-map-file=$root/Sources/CBLAS/module.modulemap")
connx=(-Xcc "-fmodule-map-file=$out/cmodules/COnnx.modulemap" -Xcc "-I$root/proto/include")
binary=$out/fuzz-import

# Rebuild only when an input (source, header, this script, the toolchain) changed.
stamp=$( { "$swiftc" --version 2>&1; echo "$language"; cat "$0" "$harness" Package.swift Sources/CBLAS/* "${core_sources[@]}" "${onnx_sources[@]}" \
  "${c_sources[@]}" "${c_headers[@]}"; printf '%s\n' "${core_sources[@]}" "${onnx_sources[@]}"; } | sha256sum | cut -d' ' -f1)

build() {
  set -e
  rm -f "$out"/obj/*.o "$out"/modules/*.swiftmodule "$out"/modules/*.swiftdoc "$out"/modules/*.swiftsourceinfo
  {
    echo "module COnnx {"
    for header in "${c_headers[@]}"; do echo "  header \"$root/$header\""; done
    echo "  link \"protobuf-c\""
    echo "  export *"
    echo "}"
  } >"$out/cmodules/COnnx.modulemap"

  echo "fuzz: compiling ${#c_sources[@]} C files, ${#core_sources[@]} + ${#onnx_sources[@]} Swift files" \
    "(Swift language mode $language)" >&2
  for source in "${c_sources[@]}"; do
    "$clang" "${sanitize_c[@]}" -I proto/include -c "$source" -o "$out/obj/c_$(basename "$source" .c).o"
  done
  "$swiftc" "${sanitize_swift[@]}" -parse-as-library -wmo -module-name DistillCore \
    "${cblas[@]}" -emit-module -emit-module-path "$out/modules/DistillCore.swiftmodule" \
    -c -o "$out/obj/DistillCore.o" "${core_sources[@]}"
  "$swiftc" "${sanitize_swift[@]}" -parse-as-library -wmo -module-name DistillONNX \
    -I "$out/modules" "${cblas[@]}" "${connx[@]}" -emit-module -emit-module-path "$out/modules/DistillONNX.swiftmodule" \
    -c -o "$out/obj/DistillONNX.o" "${onnx_sources[@]}"
  "$swiftc" "${sanitize_swift[@]}" -parse-as-library -module-name FuzzImport \
    -I "$out/modules" "${cblas[@]}" "${connx[@]}" "$harness" "$out"/obj/*.o \
    -use-ld=lld -lprotobuf-c -lopenblas -o "$binary"
  echo "$stamp" >"$out/fuzz-import.stamp"
}

if [ ! -x "$binary" ] || [ "$(cat "$out/fuzz-import.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -f "$out/fuzz-import.stamp"
  (build)  # a subshell not tested by `if`, so `set -e` inside stops at the first failing step
  if [ $? -ne 0 ]; then
    echo "fuzz: build failed (the sources may be mid-edit; see the errors above)" >&2
    exit 2
  fi
else
  echo "fuzz: sources unchanged since the last build, reusing $binary" >&2
fi

# ---- corpus ------------------------------------------------------------------------------------
# The work corpus persists between runs (libFuzzer adds what it learns); the fixtures are
# re-copied each time so new ones join, named after their fixture so they stay recognisable.
corpus=$out/corpus/work
mkdir -p "$corpus"
seeds=0
for model in Tests/Fixtures/models/*/model.onnx; do
  [ -f "$model" ] || continue
  cp "$model" "$corpus/seed-model-$(basename "$(dirname "$model")").onnx"
  seeds=$((seeds + 1))
done
for hostile in Tests/Fixtures/hostile/*.onnx; do
  [ -f "$hostile" ] || continue
  cp "$hostile" "$corpus/seed-hostile-$(basename "$hostile")"
  seeds=$((seeds + 1))
done
[ "$seeds" -gt 0 ] || echo "fuzz: warning: no fixtures found to seed the corpus" >&2

# ---- run ---------------------------------------------------------------------------------------
log=$out/logs/run-$(date +%Y%m%d-%H%M%S).log
marker=$(mktemp "$out/artifacts/.start-XXXXXX")
# detect_leaks stays on (libFuzzer reports leaks per input); Swift needs no ODR checks. Swift's
# own crash backtracer is off: it reads the crashed stack from a helper thread, which ASan reports
# as a stack-buffer-underflow, and it can keep the process alive after libFuzzer is done; libFuzzer
# and ASan print the stack of a Swift trap (fatalError, overflow, bounds) themselves.
export SWIFT_BACKTRACE=${SWIFT_BACKTRACE:-enable=no}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_odr_violation=0:abort_on_error=0:symbolize=1}
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$bindir/llvm-symbolizer}
read -r -a extra <<<"${FUZZ_ARGS:-}"
args=(-max_len=65536 -timeout=10 -rss_limit_mb=4096 -max_total_time="$seconds" -print_final_stats=1
  -dict="$root/tools/fuzz/onnx.dict" -artifact_prefix="$out/artifacts/" "${extra[@]}" "$corpus")
echo "fuzz: $binary ${args[*]}  ($seeds seed files; log $log)" >&2
start=$(date +%s)
if [ "${FUZZ_VERBOSE:-0}" = 1 ]; then
  "$binary" "${args[@]}" 2>&1 | tee "$log" >&2
  status=${PIPESTATUS[0]}
else
  "$binary" "${args[@]}" >"$log" 2>&1
  status=$?
fi
elapsed=$(( $(date +%s) - start ))

# ---- report ------------------------------------------------------------------------------------
new=()
while IFS= read -r file; do new+=("$file"); done < <(find "$out/artifacts" -maxdepth 1 -type f -newer "$marker" \
  \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
rm -f "$marker"

fstat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
field() { sed -n "s|.* $1: *\([0-9][0-9]*\).*|\1|p" <<<"$last"; }
# The last status line: "#N  REDUCE cov: C ft: F corp: K/S exec/s: E ..." (or "#N: cov: ..." with -fork).
last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1)
execs=$(fstat number_of_executed_units)
[ -n "$execs" ] || execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$last")
rate=$(fstat average_exec_per_sec)
[ -n "$rate" ] || rate=$(field exec/s)
peak=$(fstat peak_rss_mb)
cov=$(field cov)
ft=$(field ft)
corp=$(sed -n 's/.* corp: \([0-9][0-9]*\(\/[0-9A-Za-z]*\)\{0,1\}\).*/\1/p' <<<"$last")
crashes=${#new[@]}
if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes="1 (exit $status, no artifact)"; fi

if [ "$status" -ne 0 ] || [ ${#new[@]} -gt 0 ]; then
  echo "fuzz: FINDING (libFuzzer exit $status)" >&2
  if [ ${#new[@]} -eq 0 ]; then
    awk '/^(==[0-9]+==|.*Fatal error:|SUMMARY:)|deadly signal|ERROR: libFuzzer/ {on=1} on' "$log" | head -n 60 >&2
  fi
  # Replay each reproducer for its report (with -fork the inner reports are not in the log) and
  # keep one per distinct report (message with names and numbers blanked, plus the top frame of ours).
  seen=()
  distinct=0
  for file in "${new[@]}"; do
    report=$("$binary" -timeout=10 -rss_limit_mb=4096 "$file" 2>&1 \
      | grep -E 'Fatal error|ERROR: |SUMMARY: |^ *#[0-9]+ .*(/Sources/|/proto/|FuzzImport)' | head -n 25)
    signature=$( { grep -E 'Fatal error|ERROR: |SUMMARY: ' <<<"$report" | grep -v 'deadly signal' | head -n 2
      grep -m 1 -E '^ *#[0-9]+ ' <<<"$report" | sed 's/.* in //'; } \
      | sed -E "s/'[^']*'/''/g; s/\[[^]]*\]/[]/g; s/[0-9]+/N/g; s/0xN[a-f0-9]*/0x/g")
    [ -n "$signature" ] || signature="unreproduced $file"  # does not fail on replay: keep it
    duplicate=0
    for earlier in "${seen[@]}"; do [ "$earlier" = "$signature" ] && duplicate=1; done
    if [ "$duplicate" = 1 ]; then
      echo "fuzz: $(basename "$file") repeats an earlier report; left in .build-fuzz/artifacts/" >&2
      continue
    fi
    seen+=("$signature")
    distinct=$((distinct + 1))
    cp "$file" "$findings/"
    echo "fuzz: reproducer kept as tools/fuzz/findings/$(basename "$file"); replayed:" >&2
    sed 's/^/    /' <<<"$report" >&2
  done
  [ ${#new[@]} -gt 0 ] && crashes="$crashes ($distinct distinct)"
fi

echo "fuzz: ${elapsed}s, ${execs:-?} execs (${rate:-?}/s), cov: ${cov:-?} edges, ft: ${ft:-?}, corpus: ${corp:-?}," \
  "peak rss: ${peak:-?} MB, crashes: $crashes"
if [ "$status" -ne 0 ] || [ ${#new[@]} -gt 0 ]; then exit 1; fi
exit 0
