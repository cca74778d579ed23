# The hub's container image, built from source:
#   docker build -t tetherd .
# The build stage runs on the builder's platform and cross-compiles for the
# image's (docker buildx build --platform linux/arm64,linux/amd64 ...). The
# version comes from the checkout's .git; without one, give
# --build-arg VERSION=... COMMIT=... SOURCE_DATE_EPOCH=...
# Dockerfile.release makes the same image from the binary `make release`
# built, with nothing to pull. Run it (docs/guide.md, "Install"):
#   docker run -d --name tetherd -p 8443:8443 -p 8883:8883 -v tether-data:/data \
#     -e TETHER_HOSTNAME=hub.example.com tetherd
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
ARG TARGETVARIANT
# Empty: from .git (scripts/version.sh).
ARG VERSION
ARG COMMIT
ARG SOURCE_DATE_EPOCH
RUN . scripts/version.sh && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH GOARM=${TARGETVARIANT#v} \
      go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o /out/usr/bin/tetherd ./cmd/tetherd && \
    mkdir -p /out/etc/ssl/certs && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ && \
    mkdir -p /out/volume && mkdir -m 0700 /out/volume/data

FROM scratch
COPY --from=build /out/etc/ /etc/
COPY --from=build /out/usr/ /usr/
# The data folder, the hub's alone (tetherd refuses one that others can
# read); a named volume takes the owner and mode from the image. Copied
# with its parent, so that its mode (0700) comes along.
COPY --from=build --chown=65532:65532 /out/volume/ /
USER 65532:65532
ENV TETHER_DATA=/data TETHER_LISTEN=:8443 TETHER_MQTT_LISTEN=:8883
VOLUME /data
EXPOSE 8443 8883
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s CMD ["/usr/bin/tetherd", "healthcheck"]
ENTRYPOINT ["/usr/bin/tetherd"]
