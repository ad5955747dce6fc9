# Vigil's make targets. `make demo` and `make test` are the two a newcomer needs;
# both run `make deps` first, which installs what is missing and is quick when nothing is.

SHELL := /bin/bash
ROOT := $(abspath .)
BIN := $(ROOT)/bin
GO ?= go

# The mirror CI uses for the outside model weights; a hospital points this at its own folder or URL.
SHARED_MODELS := $(abspath $(ROOT)/../shared/data/models)
ifeq ($(origin VIGIL_MODEL_MIRROR), undefined)
  ifneq ($(wildcard $(SHARED_MODELS)),)
    export VIGIL_MODEL_MIRROR := $(SHARED_MODELS)
  endif
endif
export VIGIL_ORT_LIB ?= $(ROOT)/.deps/onnxruntime/libonnxruntime.so.1

# Two cores: run test binaries one package at a time beside the compiler.
TEST_FLAGS ?= -race -count=1 -p 2 -timeout 20m

.PHONY: all deps build proto proto-check fmt-check vet test demo bench soak hostile fuzz capacity clean demo-model fetal-head-model

all: build

deps:
	@bash scripts/deps.sh

build: deps
	$(GO) build -o $(BIN)/vigild ./cmd/vigild
	$(GO) build -o $(BIN)/vigil ./cmd/vigil

# proto regenerates the Go code beside the .proto files with the pinned plugins in ./bin.
proto:
	@test -x $(BIN)/protoc-gen-go -a -x $(BIN)/protoc-gen-go-grpc || { echo "protoc plugins missing: run make deps"; exit 1; }
	PATH=$(BIN):$$PATH protoc -I proto -I /usr/include \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/vigil/v1/*.proto

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi; echo "gofmt: ok"

vet:
	$(GO) vet ./...

# test: format, vet, go.mod tidy, the race-enabled suite on real ONNX Runtime and real models (the proto
# regeneration check is a test in proto/vigil/v1), the converter against TF.js, the fall evaluation on the shared clips and
# the fetal head validation on the held-apart HC18 subjects,
# vision again with gocv counting live Mats, and a CGO_ENABLED=0 build of the CLI.
test: deps fmt-check vet
	$(GO) mod tidy -diff
	$(GO) test $(TEST_FLAGS) $$($(GO) list ./... | grep -v -e '/eval$$' -e '/models/tfjs$$')
	# The converter's check builds every buildable model from npm and compares ONNX Runtime
	# with TF.js in Node on real frames; its Go side is a loop: without -race, about 2 minutes.
	$(GO) test -count=1 -timeout 20m ./models/tfjs/
	# The fall evaluation streams 13920 frames of every shared source through the Ward service,
	# and the fetal head validation sends 139 held-apart images through Imaging: without -race
	# (the services they drive are race-tested above), about 7 minutes.
	$(GO) test -count=1 -timeout 20m ./eval/
	$(GO) test -count=1 -tags matprofile ./vision/
	# Every benchmark once, so that none rots; their timings are never asserted.
	$(GO) test -count=1 -run '^$$' -bench . -benchtime=1x ./...
	CGO_ENABLED=0 $(GO) build -o /dev/null ./cmd/vigil
	@echo "make test: all passed"

demo: build
	@bash scripts/demo.sh

# soak holds vigild under steady load (ghz at concurrency 16 on AnalyzeInstance, eight camera
# bridges at once) for SOAK_MINUTES, sampling its memory; not part of make test.
GHZ_VERSION := v0.120.0
SOAK_MINUTES ?= 5
soak: build
	@test -x $(BIN)/ghz && [ "$$(cat $(BIN)/.ghz.version 2>/dev/null)" = "$(GHZ_VERSION)" ] || \
		{ GOBIN=$(BIN) $(GO) install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION) && echo $(GHZ_VERSION) > $(BIN)/.ghz.version; }
	$(GO) run ./scripts/soak --bin $(BIN) --minutes $(SOAK_MINUTES)

# hostile sends docs/RELIABILITY.md's hostile inputs to a real vigild and prints its table.
hostile: build
	$(GO) run ./scripts/hostile $(BIN)

# capacity: claims and decisions a second through real replicas, on SQLite and on a PostgreSQL
# it starts itself (one replica, then three); the table in docs/SCALING.md. About a minute.
capacity: build
	$(GO) run ./scripts/capacity --bin $(BIN)

# fuzz runs each fuzz target for FUZZ_TIME on one core (not part of make test).
FUZZ_TIME ?= 10m
fuzz: deps
	$(GO) test ./dicomio -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZ_TIME) -parallel 1
	$(GO) test ./vision -run '^$$' -fuzz '^FuzzJPEG2000Instance$$' -fuzztime $(FUZZ_TIME) -parallel 1
	$(GO) test ./vision -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZ_TIME) -parallel 1
	$(GO) test ./server -run '^$$' -fuzz '^FuzzWardStream$$' -fuzztime $(FUZZ_TIME) -parallel 1

# bench: the Go benchmarks with their allocations, then `vigil bench` (every path side by side
# in one run, with the onnxruntime-node peer and dcmtk; docs/PERFORMANCE.md reads it).
bench: build
	$(GO) test -run '^$$' -bench . -benchmem ./inference/ ./dicomio/ ./pipelines/...
	$(BIN)/vigil bench

# demo-model retrains models/us-lesion-demo from phantoms with fixed seeds (not part of make
# test; it needs Debian's python3-torch and python3-onnx, and about ten minutes on two cores).
DEMO_MODEL_DIR := models/us-lesion-demo
demo-model: build
	@command -v /usr/bin/python3 >/dev/null && /usr/bin/python3 -c 'import torch, onnx' 2>/dev/null || { \
		echo "demo-model needs Debian's python3-torch and python3-onnx: apt-get install python3-torch python3-onnx"; exit 1; }
	rm -rf $(BIN)/demo-model-data && mkdir -p $(BIN)/demo-model-data
	$(BIN)/vigil phantoms --training $(BIN)/demo-model-data --count 400 --seed 1 --frames 4
	/usr/bin/python3 $(DEMO_MODEL_DIR)/train.py --data $(BIN)/demo-model-data --out $(DEMO_MODEL_DIR)/us-lesion-demo.onnx --epochs 12
	sha256sum $(DEMO_MODEL_DIR)/us-lesion-demo.onnx

# fetal-head-model retrains models/fetal-head on the shared HC18 images with a fixed seed (not
# part of make test; Debian's python3-torch, python3-onnx and python3-opencv, about 50 minutes on
# two cores). It prints the new sha256 for models/fetal-head/manifest.yaml.
FETAL_HEAD_DIR := models/fetal-head
HC18_DIR ?= $(abspath $(ROOT)/../shared/data/ultrasound-hc18)
fetal-head-model:
	@/usr/bin/python3 -c 'import torch, onnx, cv2, numpy' 2>/dev/null || { \
		echo "fetal-head-model needs Debian's python3-torch, python3-onnx and python3-opencv: apt-get install python3-torch python3-onnx python3-opencv"; exit 1; }
	/usr/bin/python3 $(FETAL_HEAD_DIR)/train.py --data $(HC18_DIR) --out $(FETAL_HEAD_DIR)/fetal-head.onnx \
		--report $(FETAL_HEAD_DIR)/training-report.json --epochs 25
	sha256sum $(FETAL_HEAD_DIR)/fetal-head.onnx

clean:
	rm -rf $(BIN) .deps
