# distill: `make demo` runs the main job on the shipped model, `make test` runs every test.
# Both install what they need first (Debian packages; the onnx/onnxruntime Python packages for the
# independent round-trip checks).

APT_PACKAGES := libprotobuf-c-dev protobuf-c-compiler libopenblas-dev libonnx-dev libonnx-testdata \
                libpng-dev libjpeg62-turbo-dev
PYTHON_PACKAGES := onnx onnxruntime numpy
SWIFT ?= swift
DISTILL_DEBUG := .build/debug/distill
DISTILL := .build/release/distill

.PHONY: all deps python-deps build release test demo bench fuzz fixtures clean

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6 (https://swift.org) and put it on PATH" >&2; exit 1; }

python-deps:
	@python3 -c "import onnx, onnxruntime, numpy" 2>/dev/null || \
	  python3 -m pip install -q $(PYTHON_PACKAGES) || \
	  { echo "could not install $(PYTHON_PACKAGES) from PyPI" >&2; exit 1; }

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps python-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --disable-swift-testing
	python3 tools/check_roundtrip.py $(DISTILL_DEBUG) $$(ls Tests/Fixtures/models/*/model.onnx | grep -v attributes_custom_op)
	python3 tools/check_parity.py $(DISTILL_DEBUG) $$(ls -d Tests/Fixtures/models/*/ | grep -v attributes_custom_op)
	python3 tools/check_export.py $(DISTILL_DEBUG) Tests/Fixtures/models/tiny_fpn/model.onnx \
	  Tests/Fixtures/models/constant_weights/model.onnx Tests/Fixtures/models/external_data/model.onnx
	@if python3 -c "import torch, torchvision" 2>/dev/null; then \
	  python3 tools/export_detectors.py .build-fixtures/detectors && \
	  python3 tools/check_roundtrip.py $(DISTILL_DEBUG) .build-fixtures/detectors/*/model.onnx && \
	  python3 tools/check_parity.py $(DISTILL_DEBUG) .build-fixtures/detectors/*/; \
	else echo "skipped: round trips and onnxruntime parity of torchvision detectors (PyTorch and torchvision are not installed)"; fi
	@if python3 -c "import paddle, paddle2onnx" 2>/dev/null; then \
	  python3 tools/export_paddle.py .build-fixtures/paddle && \
	  python3 tools/check_parity.py $(DISTILL_DEBUG) .build-fixtures/paddle/*/; \
	else echo "skipped: onnxruntime parity of Paddle exports (paddlepaddle and paddle2onnx are not installed)"; fi

demo: release
	$(DISTILL) inspect models/tiny_fpn.onnx
	$(DISTILL) run models/tiny_fpn.onnx --input images=models/demo.jpg --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 \
	  --tap fpn/p3_out --tap fpn/p4_out --tap fpn/p5_out
	$(DISTILL) bench models/tiny_fpn.onnx --runs 20
	@mkdir -p .build/demo
	$(DISTILL) export models/tiny_fpn.onnx --out .build/demo/tiny_fpn.onnx
	@cmp models/tiny_fpn.onnx .build/demo/tiny_fpn.onnx && echo "demo: the exported model is byte-identical to models/tiny_fpn.onnx"

# Side-by-side speed against onnxruntime on torchvision's RetinaNet ResNet-50-FPN (backbone and head)
# at batch 8, 320x320 (needs PyTorch for the export).
bench: release python-deps
	python3 tools/export_bench_model.py .build-fixtures/bench
	python3 tools/bench_ort.py .build-fixtures/bench/retinanet_r50_fpn_core.onnx --input images=8x3x320x320 \
	  --runs 5 --threads 2 --distill $(DISTILL)

# Bounded libFuzzer run over the import path (SECONDS=60 by default).
fuzz: deps
	tools/fuzz/run.sh $(or $(SECONDS),60)

fixtures:
	python3 tools/make_fixtures.py

clean:
	rm -rf .build .build-fixtures .build-fuzz
