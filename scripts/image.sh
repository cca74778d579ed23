#!/bin/sh
# Builds the hub's container image from the tetherd that `make release`
# left in dist/build, with Dockerfile.release: FROM scratch, so no base
# image is pulled. `make image` runs it.
#
# Environment:
#   ARCH     the image's architecture: amd64 (default), arm64, armv7 or
#            armv6; make release must have built linux/ARCH. No RUN step,
#            so any architecture builds on any machine.
#   IMAGE    the image's name (default tetherd); tagged VERSION, and ARCH
#            after it when ARCH is not the machine's
#   ENGINE   podman (default) or docker
# Podman's own settings apply (STORAGE_DRIVER, CONTAINERS_CONF, ...).
set -eu
cd "$(dirname "$0")/.."

ARCH=${ARCH:-amd64}
IMAGE=${IMAGE:-tetherd}
ENGINE=${ENGINE:-podman}
. scripts/version.sh

case $ARCH in
amd64 | arm64) platform=linux/$ARCH ;;
armv7) platform=linux/arm/v7 ;;
armv6) platform=linux/arm/v6 ;;
*)
	echo "image: ARCH=$ARCH: want amd64, arm64, armv7 or armv6" >&2
	exit 2
	;;
esac
bin=dist/build/linux_$ARCH/tetherd
if [ ! -x "$bin" ]; then
	echo "image: no $bin: make release TARGETS=linux/$ARCH first" >&2
	exit 2
fi
# The CA bundle the hub trusts for what it dials out to (an external NATS,
# say): Mozilla's, as Debian's ca-certificates ships it, and not the build
# machine's /etc/ssl/certs, which may hold a local CA of its own.
cas=/usr/share/ca-certificates/mozilla
if ! ls "$cas"/*.crt >/dev/null 2>&1; then
	echo "image: no $cas/*.crt: install ca-certificates" >&2
	exit 2
fi

ctx=dist/image
rm -rf "$ctx"
mkdir -p "$ctx/volume"
mkdir -m 0700 "$ctx/volume/data"
cp "$bin" "$ctx/"
cat "$cas"/*.crt >"$ctx/ca-certificates.crt"

tag=$IMAGE:$VERSION
if [ "$platform" != "linux/$(go env GOARCH)" ]; then
	tag=$tag-$ARCH
fi
# The image carries the release's time, not the build's: its layers are
# then the same bytes on every build. Podman: --format docker, since OCI
# images have no HEALTHCHECK and podman drops it from them.
opts="--build-arg SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
if [ "$ENGINE" = podman ]; then
	opts="--format docker --timestamp $SOURCE_DATE_EPOCH"
fi
# shellcheck disable=SC2086 # opts are words
"$ENGINE" build $opts --platform "$platform" -f Dockerfile.release -t "$tag" \
	--label org.opencontainers.image.version="$VERSION" \
	--label org.opencontainers.image.revision="$COMMIT" \
	--label org.opencontainers.image.source=https://github.com/tether-io/tether \
	"$ctx"
echo "image: $tag"
