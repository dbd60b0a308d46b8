# Builds a static pushgate binary and ships it in a minimal image that
# runs as an unprivileged user and carries CA certificates (for FCM, APNs
# and rediss://).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/pushgate ./cmd/pushgate

# distroless/static: no shell, CA certificates in /etc/ssl/certs, and a
# "nonroot" user (uid 65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pushgate /usr/local/bin/pushgate
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["pushgate"]
CMD ["serve", "--config", "/etc/pushgate/pushgate.yaml"]
