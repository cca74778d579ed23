#!/bin/sh
# Checks that `make release` is reproducible: builds the release of the
# same commit again, from a clone in another folder and with an empty Go
# build cache (nothing reused from the first build), and compares every
# file it makes with dist/SHA256SUMS. A file that differs is copied to
# dist/unreproducible/ to compare (diffoscope shows where).
#
# Environment:
#   REPRO_TARGETS   the targets built again (default linux/amd64, with its
#                   .deb packages); the first build must have made them
#   NFPM_PKG        as for scripts/deb.sh (the Makefile sets it)
set -eu
cd "$(dirname "$0")/.."

REPRO_TARGETS=${REPRO_TARGETS:-linux/amd64}
if [ ! -f dist/SHA256SUMS ]; then
	echo "reproducible: no dist/SHA256SUMS: run make release first" >&2
	exit 2
fi
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
	echo "reproducible: the work tree differs from its commit (git status); a clone of the commit would not build the same" >&2
	exit 2
fi
# Files git does not track (a test's leftovers, say) are not in the clone:
# named here, in case one of them is why a file differs.
untracked=$(git status --porcelain | sed -n 's/^?? //p')
if [ -z "${NFPM_PKG:-}" ]; then
	echo "reproducible: NFPM_PKG is not set: run make reproducible" >&2
	exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# nfpm comes from the usual build cache: it is a tool, not an output.
GOBIN=$tmp/bin go install "$NFPM_PKG"
git clone -q "$PWD" "$tmp/src"
git -C "$tmp/src" checkout -q "$(git rev-parse HEAD)"
(
	cd "$tmp/src"
	GOCACHE=$tmp/gocache TARGETS=$REPRO_TARGETS NFPM=$tmp/bin/nfpm sh scripts/release.sh >/dev/null
)

same=0 differ=0
while read -r sum name; do
	first=$(awk -v n="$name" '$2 == n { print $1 }' dist/SHA256SUMS)
	if [ -z "$first" ]; then
		echo "reproducible: $name is not in dist/SHA256SUMS: make release with the targets $REPRO_TARGETS" >&2
		exit 2
	fi
	if [ "$first" = "$sum" ]; then
		same=$((same + 1))
	else
		differ=$((differ + 1))
		mkdir -p dist/unreproducible
		cp "$tmp/src/dist/$name" dist/unreproducible/
		echo "reproducible: $name differs: $first, then $sum (second build in dist/unreproducible/)" >&2
	fi
done <"$tmp/src/dist/SHA256SUMS"
if [ "$differ" -gt 0 ]; then
	if [ -n "$untracked" ]; then
		printf 'reproducible: files git does not track, which the first build saw and the second did not:\n%s\n' "$untracked" >&2
	fi
	exit 1
fi
echo "reproducible: $same files, the same bytes from a second build ($REPRO_TARGETS)"
