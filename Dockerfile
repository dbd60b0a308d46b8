# Builds a static pushgate binary and ships it in a minimal image that
# runs as an unprivileged user and carries CA certificates (for FCM, APNs
# and rediss://).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pushgate ./cmd/pushgate && mkdir -p /out/state

# distroless/static: no shell, CA certificates in /etc/ssl/certs, and a
# "nonroot" user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pushgate /usr/local/bin/pushgate
COPY --from=build --chown=65532:65532 /out/state /var/lib/pushgate
USER nonroot:nonroot
# The newest verified checkpoint of the control log is remembered here:
# mount a persistent volume.
ENV PUSHGATE_CONTROL_STATE_DIR=/var/lib/pushgate
VOLUME /var/lib/pushgate
EXPOSE 8080
ENTRYPOINT ["pushgate"]
CMD ["serve", "--config", "/etc/pushgate/pushgate.yaml"]
