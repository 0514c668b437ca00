# sandkeep — build, test, run, bench. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
GOBIN := $(shell $(GO) env GOPATH)/bin
export PATH := $(GOBIN):$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w
VERSITYGW_VERSION := v1.8.0
RESTIC_VERSION := v0.18.1
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
STATICCHECK_VERSION := v0.8.2
GOLANGCI_LINT_VERSION := v2.15.0

.PHONY: help build run test test-short tools proto lint bench bench-restic bench-ensure bench-1m bench-go bench-recovery bench-load fuzz clean

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/sandkeep and the static bin/sandkeep-agent
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS) -X github.com/sandkeep/sandkeep/internal/coordcli.Version=$(VERSION)' -o bin/sandkeep ./coordinator
	CGO_ENABLED=0 $(GO) build -trimpath -tags grpcnotrace -ldflags '$(LDFLAGS) -X github.com/sandkeep/sandkeep/internal/agentcli.Version=$(VERSION)' -o bin/sandkeep-agent ./agent

run: build ## run the coordinator on embedded defaults (SQLite + ./data/blobs)
	./bin/sandkeep serve --data ./data

tools: ## install the pinned test tools (versitygw for the S3 tests)
	@command -v versitygw >/dev/null 2>&1 || { echo "installing versitygw $(VERSITYGW_VERSION)"; $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION); }

# The race detector slows the pure-Go SQLite about a hundredfold, so the
# end-to-end and store packages run without it; every concurrent component
# runs under it (the chunker, a sequential scanner, does not: it spent two
# minutes of CI there for nothing the detector could find).
RACE_PKGS := ./internal/agent/... ./internal/control/... ./internal/restore/... ./internal/snapshot/... \
	./internal/watcher/... ./internal/sessions/... ./internal/blobstore/... ./internal/repo/... ./internal/pack/... \
	./internal/provider/... ./internal/lifecycle/... ./internal/gc/... ./internal/links/... ./internal/server/...

test: tools ## the whole test suite (unit, conformance on SQLite/PostgreSQL/local/S3, end to end)
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)

test-short: ## fast unit tests only
	$(GO) test -short ./...

proto: ## regenerate the gRPC code from proto/ (buf + protoc-gen-go + protoc-gen-go-grpc, pinned)
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	cd proto && buf lint && buf generate

lint: ## gofmt + vet + staticcheck + golangci-lint (.golangci.yml: errorlint, gocyclo, funlen, depguard for the agent boundary; pinned, installed if missing)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet ./...
	@command -v staticcheck >/dev/null 2>&1 || { echo "installing staticcheck $(STATICCHECK_VERSION)"; $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); }
	staticcheck ./...
	@command -v golangci-lint >/dev/null 2>&1 || { echo "installing golangci-lint $(GOLANGCI_LINT_VERSION)"; $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); }
	golangci-lint run ./...

# Every fuzz target, as package:Func. `go test` runs their seed corpora in
# `make test`; `make fuzz` mutates each for FUZZTIME (not in CI: random).
FUZZTIME ?= 10s
FUZZ_TARGETS := api:FuzzAgentAPI api:FuzzPutFiles blobstore:FuzzValidateKey chunker:FuzzChunker id:FuzzParse \
	ignore:FuzzGlobAgainstRegexp ignore:FuzzParse links:FuzzParseRange pack:FuzzParseFooter \
	pack:FuzzDecodeBlob pack:FuzzDecodeBlobStored pack:FuzzDecodeGroup restore:FuzzPlanEntry restore:FuzzRun \
	snapshot:FuzzIncremental snapshot:FuzzReadIndex tree:FuzzDecode tree:FuzzCleanPath urlsign:FuzzVerify

fuzz: ## fuzz every decoder and path handler for FUZZTIME each (default 10s)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$pkg $$fn"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 200x ./internal/$$pkg/; \
	done

bench-go: ## Go micro-benchmarks (chunker, pack, snapshot, restore)
	$(GO) test -run '^$$' -bench . -benchtime 3x ./internal/chunker/ ./internal/pack/ ./internal/snapshot/ ./internal/restore/

bench-recovery: ## rebuild from the bucket per 1,000 versions and per 100k blobs, check --read-data throughput (SQLite + local dir)
	$(GO) test -run '^$$' -bench 'Rebuild|CheckReadData' -benchtime 3x ./internal/repo/

bench-load: build tools ## replicas on PostgreSQL under many simulated agents (bench/README: -only load), then the query plans on a large database (-only dbscale)
	$(GO) run ./bench/cmd/skbench -only load
	$(GO) run ./bench/cmd/skbench -only dbscale -dbscale-files 1000

# The 1M-file part of `make bench` and `make bench-1m`.
BENCH_1M := -only latency -sizes 1m -changes 10 -restic-changes 1

bench-restic: build tools
	@command -v restic >/dev/null 2>&1 || $(GO) install github.com/restic/restic/cmd/restic@$(RESTIC_VERSION)

bench: bench-restic ## side-by-side benchmark against restic on versitygw (see bench/README), then ensure-to-ready on a 1 GiB head and the 1M-file tree
	$(GO) run ./bench/cmd/skbench
	$(GO) run ./bench/cmd/skbench -only ensure
	$(GO) run ./bench/cmd/skbench $(BENCH_1M)

bench-1m: bench-restic ## continuous sync on a generated 1M-file tree (2.3 GB): initial sync, one-file changes, agent RSS (bench/README)
	$(GO) run ./bench/cmd/skbench $(BENCH_1M)

bench-ensure: bench-restic ## sandbox ensure to ready on a 1 GiB / 20k-file head (local provider) vs restic restore (bench/README)
	$(GO) run ./bench/cmd/skbench -only ensure -runs 3

clean: ## remove build outputs and local data
	rm -rf bin data .bench
