# distill: `make demo` runs the main job on the shipped model, `make test` runs every test.
# Both install what they need first: Debian packages, and for the independent checks the exact
# Python packages of tools/requirements.txt in a virtual environment (.build-venv/); the system
# Python is never modified. `make torch-deps` adds the optional PyTorch environment
# (tools/requirements-torch.txt, .build-venv-torch/) for fixture generators and peer benchmarks.

APT_PACKAGES := libprotobuf-c-dev protobuf-c-compiler libopenblas-dev libdnnl-dev libonnx-dev libonnx-testdata \
                libpng-dev libjpeg62-turbo-dev libcairo2-dev fonts-dejavu-core libopenmpi-dev openmpi-bin \
                iproute2
VENV := .build-venv
PYTHON := $(VENV)/bin/python
TORCH_VENV := .build-venv-torch
TORCH_PYTHON := $(TORCH_VENV)/bin/python
SWIFT ?= swift
DISTILL_DEBUG := .build/debug/distill
DISTILL := .build/release/distill

.PHONY: all deps python-deps torch-deps build release test demo bench fuzz fixtures clean

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v $(SWIFT) >/dev/null || { echo "swift not found: install Swift 6 (https://swift.org) and put it on PATH" >&2; exit 1; }

python-deps: $(VENV)/installed
torch-deps: $(TORCH_VENV)/installed

# A virtual environment from a requirements file; rebuilt when the file changes. Debian's python3
# needs python3-venv for `python3 -m venv`; it is installed only when that fails.
define make-venv
	@rm -rf $(1)
	@command -v python3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3; }
	@python3 -m venv $(1) 2>/dev/null || { rm -rf $(1); apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && python3 -m venv $(1); }
	@echo "installing $(2) into $(1)"
	@$(1)/bin/python -m pip install -q --disable-pip-version-check -r $(2) || \
	  { rm -rf $(1); echo "could not install $(2) from PyPI" >&2; exit 1; }
	@touch $(1)/installed
endef

$(VENV)/installed: tools/requirements.txt
	$(call make-venv,$(VENV),tools/requirements.txt)

$(TORCH_VENV)/installed: tools/requirements-torch.txt tools/requirements.txt
	$(call make-venv,$(TORCH_VENV),tools/requirements-torch.txt)

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

test: deps python-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --disable-swift-testing
	$(PYTHON) tools/check_roundtrip.py $(DISTILL_DEBUG) $$(ls Tests/Fixtures/models/*/model.onnx | grep -v attributes_custom_op)
	$(PYTHON) tools/check_parity.py $(DISTILL_DEBUG) $$(ls -d Tests/Fixtures/models/*/ | grep -v attributes_custom_op)
	$(PYTHON) tools/check_export.py $(DISTILL_DEBUG) --self-test Tests/Fixtures/models/tiny_fpn/model.onnx \
	  Tests/Fixtures/models/constant_weights/model.onnx Tests/Fixtures/models/external_data/model.onnx \
	  Tests/Fixtures/gradients/resnet18_fpn/model.onnx
	$(DISTILL_DEBUG) train Tests/Fixtures/distill/tiny.yaml --overwrite
	$(PYTHON) tools/check_student.py $(DISTILL_DEBUG) .build/distill-tiny/student.onnx
	@if [ -x $(TORCH_PYTHON) ] && $(TORCH_PYTHON) -c "import torch, torchvision" 2>/dev/null; then \
	  $(TORCH_PYTHON) tools/export_detectors.py .build-fixtures/detectors && \
	  $(PYTHON) tools/check_roundtrip.py $(DISTILL_DEBUG) .build-fixtures/detectors/*/model.onnx && \
	  $(PYTHON) tools/check_parity.py $(DISTILL_DEBUG) .build-fixtures/detectors/*/; \
	else echo "skipped: round trips and onnxruntime parity of torchvision detectors (no PyTorch environment: make torch-deps)"; fi
	@if [ -x $(TORCH_PYTHON) ] && $(TORCH_PYTHON) -c "import paddle, paddle2onnx" 2>/dev/null; then \
	  $(TORCH_PYTHON) tools/export_paddle.py .build-fixtures/paddle && \
	  $(PYTHON) tools/check_parity.py $(DISTILL_DEBUG) .build-fixtures/paddle/*/; \
	else echo "skipped: onnxruntime parity of Paddle exports (paddlepaddle and paddle2onnx are not installed)"; fi

# The whole product on the shipped models (models/demo_*.onnx): synthetic data, the teacher and the
# starting student evaluated, a baseline and a distilled student trained and compared; runs/demo/report.html.
demo: release
	$(DISTILL) demo --out runs/demo --overwrite

# Issue #11's speed table in one run: distill, onnxruntime and PyTorch on FCOS-style ResNet-18-FPN
# and ResNet-50-FPN at 320x320 (forward at batch 1 and 8, a training step), and a whole
# distillation step against PyTorch (tools/bench_speed.py; needs PyTorch for the exports).
bench: release python-deps torch-deps
	$(TORCH_PYTHON) tools/bench_speed.py --distill $(DISTILL) --threads 2 --runs 5 --distillation

# Bounded libFuzzer run over the import path (SECONDS=60 by default).
fuzz: deps
	tools/fuzz/run.sh $(or $(SECONDS),60)

fixtures: python-deps
	$(PYTHON) tools/make_fixtures.py

clean:
	rm -rf .build .build-fixtures .build-fuzz $(VENV) $(TORCH_VENV)
