# syntax=docker/dockerfile:1
#
# The RateThrottle node: a static binary on an empty base, run as a
# non-root user. See docs/OPERATIONS.md.
#
#   docker build -t ratethrottle .
#   docker run -p 8080:8080 ratethrottle
#
# BIN_STAGE=prebuilt takes the binaries from ./dist instead of compiling
# them in a golang image (for machines that cannot pull one; see
# docs/OPERATIONS.md for the commands that fill ./dist).
ARG BIN_STAGE=build
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY pkg ./pkg
COPY internal ./internal
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
RUN go build -ldflags="-s -w" -o /out/ratethrottle-node ./cmd/node \
 && go build -ldflags="-s -w" -o /out/ratethrottle ./cmd/ratethrottle \
 && go build -ldflags="-s -w" -o /out/healthcheck ./cmd/healthcheck \
 && mkdir -p /out/data

FROM scratch AS prebuilt
COPY dist/ /out/

FROM ${BIN_STAGE} AS bin

FROM scratch
COPY --from=bin /out/ratethrottle-node /out/ratethrottle /out/healthcheck /usr/local/bin/
COPY --from=bin --chown=65532:65532 /out/data /data
# 65532 is the conventional "nonroot" user of minimal images; scratch has
# no /etc/passwd, so the node's default ID comes from the host name.
USER 65532:65532
ENV RATETHROTTLE_LISTEN=:8080 \
    RATETHROTTLE_DATA_DIR=/data
# 8080: chat page, /ws, /healthz, /readyz. 9000: the ops listener
# (/metrics, /stats, /dashboard, /admin), loopback unless
# RATETHROTTLE_OPS_LISTEN says otherwise. 4222 and 6222: the embedded NATS
# server's clients and routes.
EXPOSE 8080 9000 4222 6222
VOLUME ["/data"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/healthcheck"]
ENTRYPOINT ["/usr/local/bin/ratethrottle-node"]
