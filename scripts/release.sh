#!/bin/sh
# Builds Tether's release into dist/: for every target a .tar.gz (the
# Windows CLI a .zip) of the binaries with LICENSE, README.md, NOTICE and
# THIRD_PARTY when present and, for Linux, deploy/'s systemd units and
# example config; .deb packages of the hub (tetherd) and the agent
# (tether) for amd64, arm64, armhf and armel; and SHA256SUMS over them all.
# `make release` runs it.
#
# The same commit gives the same bytes on any machine (scripts/version.sh
# sets SOURCE_DATE_EPOCH to the commit's time; internal/tools/pack writes the
# archives): CGO off, -trimpath, no build ID, and no VCS stamp, which
# would differ between a checkout and a source tarball (the version, commit
# and date are set with -ldflags -X). The Go release is an input too: each
# binary records its own (go version -m).
#
# Environment:
#   TARGETS   the targets to build, space-separated (default: all below)
#   DEBS      0 to build no .deb (default 1)
#   NFPM_PKG  nfpm's package@version, which the Makefile pins
#   NFPM      an nfpm binary to run instead
#   VERSION, COMMIT, SOURCE_DATE_EPOCH   see scripts/version.sh
set -eu
cd "$(dirname "$0")/.."

ALL_TARGETS="linux/amd64 linux/arm64 linux/armv7 linux/armv6 linux/mips linux/mipsle linux/riscv64 darwin/arm64 windows/amd64"
TARGETS=${TARGETS:-$ALL_TARGETS}
DEBS=${DEBS:-1}

. scripts/version.sh
case $VERSION in
*-dirty) echo "release: the work tree has changes not committed; version $VERSION" >&2 ;;
esac

dist=dist
rm -rf "$dist"
mkdir -p "$dist/build" "$dist/stage"

# build OS ARCH: the binaries of one target into dist/build/OS_ARCH/.
# ARCH is Go's, with armv6 and armv7 for GOARCH=arm and GOARM=6 or 7.
build() {
	goos=$1 arch=$2 goarch=$2 goarm='' gomips=''
	case $arch in
	armv6) goarch=arm goarm=6 ;;
	armv7) goarch=arm goarm=7 ;;
	mips | mipsle) gomips=softfloat ;; # OpenWrt routers have no FPU
	esac
	pkgs="./cmd/tetherd ./cmd/tether"
	if [ "$goos" = windows ]; then
		pkgs=./cmd/tether # the CLI; the hub and the agent run on Linux
	fi
	out=$dist/build/${goos}_$arch
	mkdir -p "$out"
	echo "build $goos/$arch"
	# shellcheck disable=SC2086 # pkgs is a list
	# GOAMD64=v1: every x86-64 machine, whatever the builder's environment.
	env CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch" GOARM="$goarm" GOMIPS="$gomips" GOAMD64=v1 \
		go build -trimpath -buildvcs=false -ldflags "$LDFLAGS" -o "$out/" $pkgs
}

# archive OS ARCH: dist/tether_VERSION_OS_ARCH.tar.gz (.zip for Windows).
archive() {
	goos=$1 arch=$2
	name=tether_${VERSION}_${goos}_$arch
	stage=$dist/stage/$name
	mkdir -p "$stage"
	cp "$dist/build/${goos}_$arch"/* "$stage/"
	for f in LICENSE README.md NOTICE THIRD_PARTY THIRD_PARTY.md; do
		if [ -f "$f" ]; then
			cp "$f" "$stage/"
		fi
	done
	if [ "$goos" = linux ]; then
		mkdir -p "$stage/deploy"
		cp deploy/* "$stage/deploy/"
	fi
	ext=tar.gz
	if [ "$goos" = windows ]; then
		ext=zip
	fi
	go run ./internal/tools/pack archive "$dist/$name.$ext" "$stage"
	echo "  $dist/$name.$ext"
}

for t in $TARGETS; do
	case $t in
	*/*) ;;
	*)
		echo "release: target $t: want OS/ARCH, one of: $ALL_TARGETS" >&2
		exit 2
		;;
	esac
	build "${t%/*}" "${t#*/}"
	archive "${t%/*}" "${t#*/}"
done

if [ "$DEBS" = 1 ]; then
	sh scripts/deb.sh
fi

go run ./internal/tools/pack sums "$dist"
rm -rf "$dist/stage" "$dist/tools"
echo "release $VERSION:"
cat "$dist/SHA256SUMS"
