# Container image for ipsec_exporter.
#
#   docker build -t ipsec_exporter \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) .
#
# The build needs only this repository and the Go module proxy: the BPF
# objects are committed (bpf2go output), so no clang runs here.
# deploy/docker_test.go replays the build stage on the host and checks the
# result, since CI has no container daemon.
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly GOPROXY=https://proxy.golang.org,direct
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG REVISION=unknown
ARG BRANCH=unknown
# Static binary (CGO off) with the same version ldflags as .promu.yml;
# running it once proves it starts on a bare base image.
RUN go build -trimpath -o ipsec_exporter -ldflags "\
      -X github.com/prometheus/common/version.Version=$(cat VERSION) \
      -X github.com/prometheus/common/version.Revision=${REVISION} \
      -X github.com/prometheus/common/version.Branch=${BRANCH} \
      -X github.com/prometheus/common/version.BuildUser=docker \
      -X github.com/prometheus/common/version.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)" . \
 && ./ipsec_exporter --version

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
