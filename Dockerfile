# Builds a static pushgate binary and ships it in a minimal image that
# runs as an unprivileged user and carries CA certificates (for FCM, APNs
# and rediss://).
#
#   docker build --build-arg VERSION=v1.2.3 -t pushgate .
#   docker run -p 8080:8080 -e PUSHGATE_CONTROL_LOG_PUBLIC_KEY=... \
#     -v ./keyring.yaml:/etc/pushgate/keyring.yaml:ro pushgate
#
# The base images are arguments so that scripts/image-check can build this
# same file on a machine that cannot reach a registry, with stand-ins it
# makes itself (README, "Containers").
ARG GO_IMAGE=golang:1.26-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${GO_IMAGE} AS build
# VERSION is what pushgate version prints; the build context has no .git
# (.dockerignore), so nothing else would say which release this is.
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.stampedVersion=${VERSION}" -o /out/pushgate ./cmd/pushgate && mkdir -p /out/state

# distroless/static: no shell, CA certificates in /etc/ssl/certs, and a
# "nonroot" user (uid 65532).
FROM ${RUNTIME_IMAGE}
COPY --from=build /out/pushgate /usr/local/bin/pushgate
COPY --from=build --chown=65532:65532 /out/state /var/lib/pushgate
# The shipped configuration: every setting with its default, commented.
# Mount your own over it, or override any setting with PUSHGATE_* variables.
COPY examples/pushgate.yaml /etc/pushgate/pushgate.yaml
USER nonroot:nonroot
# A container is reached from outside: listen on every interface. The
# environment wins over the configuration file.
ENV PUSHGATE_LISTEN=0.0.0.0:8080
# The newest verified checkpoint of the control log is remembered here:
# mount a persistent volume.
ENV PUSHGATE_CONTROL_STATE_DIR=/var/lib/pushgate
VOLUME /var/lib/pushgate
EXPOSE 8080
# pushgate health asks /healthz on $PUSHGATE_LISTEN's port (no shell or
# curl in the image). A worker-only container has its probes on
# metrics_listen: give it --url http://127.0.0.1:PORT/healthz.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["pushgate", "health"]
ENTRYPOINT ["pushgate"]
CMD ["serve", "--config", "/etc/pushgate/pushgate.yaml"]
