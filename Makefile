# ipsec_exporter: the usual Prometheus target names.
GO           ?= go
CLANG        ?= clang-14
GOLANGCI_LINT_VERSION ?= v2.6.2
GOLANGCI_LINT ?= $(CURDIR)/.build/tools/golangci-lint-$(GOLANGCI_LINT_VERSION)/golangci-lint
PROMU_VERSION ?= v0.20.0
PROMU         ?= $(CURDIR)/.build/tools/promu-$(PROMU_VERSION)/promu
PKGS          = ./...
# Every Go module of the repository (each has its own go.mod).
MODULES       = . dashboards examples/kubernetes deploy/helm

.PHONY: all build test test-host test-vm test-vm-arm64 test-vm-arm64-ci test-e2e lab release generate lint vet fmt deps bench clean

all: build test

## build: the exporter binary (BINARY), static, as it runs on nodes and in
## the lab, with the build info of a release: .promu.yml's version ldflags
## filled by scripts/ldflags.sh, the version from VERSION.
BINARY ?= ipsec_exporter
build:
	ldflags="$$(bash scripts/ldflags.sh)" && CGO_ENABLED=0 $(GO) build -ldflags "$$ldflags" -o $(BINARY) .

## deps: install what tests and the lab need (qemu for amd64 and arm64,
## busybox, kernels' tools, dpkg's arm64 architecture for the arm64 lab).
deps:
	bash scripts/install-deps.sh --arm64

## test: host unit tests, every TestLab* test inside each lab kernel, then
## the end-to-end run (lab VM, real Prometheus and Alertmanager on the host).
test: deps lint test-host test-vm test-vm-arm64-ci test-e2e

test-host:
	$(GO) vet $(PKGS)
	$(GO) test -race $(PKGS)
	cd examples/kubernetes && $(GO) vet ./... && $(GO) test ./...
	cd deploy/helm && $(GO) vet ./... && $(GO) test ./...
	cd dashboards && $(GO) vet ./... && $(GO) test ./...

test-vm:
	$(GO) run ./lab/cmd/ipsec-lab test

## test-vm-arm64: every TestLab* test inside Debian's arm64 kernels (6.1 and
## 6.12) under qemu-system-aarch64, software emulation: slow, not part of
## make test (see README). The IKE daemon tests need the host's daemons and
## do not run there.
test-vm-arm64: deps
	$(GO) run ./lab/cmd/ipsec-lab test -arch arm64 -timeout 60m

## test-vm-arm64-ci: the part of the arm64 lab make test runs: the verdict
## suite (every scenario, both hook modes, auto's choice) on 6.12. Measured
## on the 2-core build machine: 2m19s with the lab cache warm, about 4 min
## when it first fetches the arm64 packages.
test-vm-arm64-ci:
	$(GO) run ./lab/cmd/ipsec-lab test -arch arm64 -kernel 6.12 -pkg ./internal/verdict/

test-e2e:
	cd dashboards && $(GO) test ./e2e -e2e -v -timeout 30m

## lab: boot the newest lab kernel with a two-node IPsec scenario and the
## exporter inside; metrics are forwarded to the host (see README), where
## Prometheus (127.0.0.1:19090) and Alertmanager (127.0.0.1:19093) run with
## the lab's rules. Ctrl-C stops it all. LAB_FLAGS passes ipsec-lab run's
## flags, e.g. LAB_FLAGS='-port 20871 -prometheus-port 29090 -alertmanager-port 29093'.
## Built, not `go run`: go run exits 1 when Ctrl-C reaches it, and make
## would report that as an error.
lab: deps
	$(GO) build -o .build/ipsec-lab ./lab/cmd/ipsec-lab
	exec .build/ipsec-lab run $(LAB_FLAGS)

## release: .tarballs/ipsec_exporter-VERSION.linux-ARCH.tar.gz for every
## platform of .promu.yml (binary, README, dashboards, rules, examples, docs)
## and sha256sums.txt, reproducibly (SOURCE_DATE_EPOCH: the commit's time).
RELEASE_OUT ?= .tarballs
release: $(PROMU)
	bash scripts/release.sh $(PROMU) $(RELEASE_OUT)

# promu, pinned, built once through the Go module proxy. Not `go install
# promu@version`: that asks the proxy for promu's version list, which it
# refuses; a throwaway module resolves the same pinned version.
$(PROMU):
	d=$$(mktemp -d) && cd $$d && $(GO) mod init promu-build >/dev/null 2>&1 && \
	$(GO) get github.com/prometheus/promu@$(PROMU_VERSION) && \
	$(GO) build -o $@ github.com/prometheus/promu; status=$$?; rm -rf $$d; exit $$status

## bench: what watching IPsec costs; writes BENCHMARKS.md (15-30 min).
bench:
	bash scripts/bench.sh

## generate: rebuild the BPF objects (bpf2go, amd64 and arm64) with the
## pinned clang; bpf2go reads BPF2GO_CC and takes the llvm-strip of the same
## version suffix (llvm-strip-14).
generate:
	BPF2GO_CC=$(CLANG) $(GO) generate ./...

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -l -w .

## lint: golangci-lint (.golangci.yml) over every module; all are linted,
## then it fails if any had findings.
lint: $(GOLANGCI_LINT)
	@status=0; for m in $(MODULES); do \
		echo "lint: $$m"; \
		(cd $$m && $(GOLANGCI_LINT) run --config $(CURDIR)/.golangci.yml ./...) || status=1; \
	done; exit $$status

# The pinned golangci-lint, built once through the Go module proxy.
$(GOLANGCI_LINT):
	GOBIN=$(dir $@) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

clean:
	rm -f $(BINARY)
