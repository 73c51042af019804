# Container image for ipsec_exporter, for linux/amd64 and linux/arm64.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ipsec_exporter \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) .
#
# (plain `docker build` builds the builder's own platform). The build needs
# only this repository and the Go module proxy: the BPF objects of both
# architectures are committed (bpf2go output), so no clang runs here.
# deploy/docker_test.go replays the build stage on the host for each
# platform and checks the result, since CI has no container daemon.
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

# The build stage runs on the builder's platform and cross-compiles (pure
# Go, CGO off), so an arm64 image needs no emulation of arm64 to build.
FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly GOPROXY=https://proxy.golang.org,direct
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG REVISION=unknown
ARG BRANCH=unknown
# SOURCE_DATE_EPOCH (the commit's time) makes the build date, and so the
# binary, reproducible; unset, the build date is now.
ARG SOURCE_DATE_EPOCH
# TARGETOS and TARGETARCH: BuildKit sets them per --platform; without them
# (the legacy builder) the binary is the builder's own platform's.
ARG TARGETOS
ARG TARGETARCH
# Static binary (CGO off) with the same version ldflags as .promu.yml. A
# binary of the builder's architecture is run once, which proves it starts
# on a bare base image; a cross-built one is checked for its architecture.
RUN export GOOS="${TARGETOS:-linux}" GOARCH="${TARGETARCH:-$(go env GOHOSTARCH)}" \
 && go build -trimpath -o ipsec_exporter -ldflags "\
      -X github.com/prometheus/common/version.Version=$(cat VERSION) \
      -X github.com/prometheus/common/version.Revision=${REVISION} \
      -X github.com/prometheus/common/version.Branch=${BRANCH} \
      -X github.com/prometheus/common/version.BuildUser=docker \
      -X github.com/prometheus/common/version.BuildDate=$(date -u -d @${SOURCE_DATE_EPOCH:-$(date +%s)} +%Y%m%d-%H:%M:%S)" . \
 && if [ "$GOARCH" = "$(go env GOHOSTARCH)" ]; then ./ipsec_exporter --version; \
    else go version -m ipsec_exporter | grep "GOARCH=$GOARCH\$"; fi

FROM ${BASE_IMAGE}
COPY --from=build /src/ipsec_exporter /bin/ipsec_exporter
# Non-root by default. Container runtimes hand added capabilities only to
# uid 0 (they set no ambient capabilities), so deployments that want the
# BPF and netlink collectors run it as uid 0 with every capability dropped
# but CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN: see docs/deploy.md and
# examples/kubernetes/daemonset.yaml. As this user it still serves, with
# the collectors that need those capabilities reporting failure.
USER 65532:65532
EXPOSE 10871
ENTRYPOINT ["/bin/ipsec_exporter"]
