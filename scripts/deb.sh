#!/bin/sh
# Builds the Debian packages of the hub (tetherd) and the agent and CLI
# (tether) from the binaries scripts/release.sh left in dist/build, for
# every Debian architecture among them: amd64, arm64, armhf (GOARM=7) and
# armel (GOARM=6, the Raspberry Pi Zero and 1). packaging/deb/ holds the
# nfpm configurations and the maintainer scripts. scripts/release.sh runs
# it, and `make debs` alone.
set -eu
cd "$(dirname "$0")/.."

. scripts/version.sh

# nfpm, at the version the Makefile pins (NFPM_PKG), built once into
# dist/tools; NFPM names another nfpm to run instead.
if [ -z "${NFPM:-}" ]; then
	if [ -z "${NFPM_PKG:-}" ]; then
		echo "deb: NFPM_PKG is not set: run make debs (the Makefile pins nfpm's version)" >&2
		exit 2
	fi
	GOBIN=$PWD/dist/tools go install "$NFPM_PKG"
	NFPM=$PWD/dist/tools/nfpm
fi

# debVersion turns a release's version (scripts/version.sh) into a Debian
# version, which must start with a digit and sort as releases do: 1.2.3
# stays, 1.2.3-rc1 is 1.2.3~rc1 (before 1.2.3), 1.2.3-4-gabc1234 (commits
# past a tag) is 1.2.3+4.gabc1234 (after it), and a commit before any tag,
# abc1234, is 0.0.0~git.abc1234. -dirty becomes +dirty or .dirty.
debVersion() {
	v=$1 dirty=
	case $v in
	*-dirty) v=${v%-dirty} dirty=1 ;;
	esac
	case $v in
	[0-9]*.*) # a tag's; a commit's hash has no dot
		past=$(printf '%s\n' "$v" | sed -n 's/^.*-\([0-9][0-9]*\)-g\([0-9a-f]*\)$/\1.g\2/p')
		if [ -n "$past" ]; then
			v=$(printf '%s\n' "$v" | sed 's/-[0-9][0-9]*-g[0-9a-f]*$//')
		fi
		v=$(printf '%s\n' "$v" | sed 's/-/~/') # a pre-release sorts before its release
		if [ -n "$past" ]; then
			v=$v+$past
		fi
		if [ -n "$dirty" ]; then
			case $v in
			*+*) v=$v.dirty ;;
			*) v=$v+dirty ;;
			esac
		fi
		;;
	*)
		v=0.0.0~git.$v
		if [ -n "$dirty" ]; then
			v=$v.dirty
		fi
		;;
	esac
	printf '%s\n' "$v"
}

DEB_VERSION=$(debVersion "$VERSION")
export DEB_VERSION
made=0
for pair in amd64:linux_amd64 arm64:linux_arm64 armhf:linux_armv7 armel:linux_armv6; do
	DEB_ARCH=${pair%%:*}
	DEB_BUILD=dist/build/${pair#*:}
	if [ ! -x "$DEB_BUILD/tetherd" ] || [ ! -x "$DEB_BUILD/tether" ]; then
		continue
	fi
	export DEB_ARCH DEB_BUILD
	for pkg in tetherd tether; do
		out=dist/${pkg}_${DEB_VERSION}_$DEB_ARCH.deb
		$NFPM package --config "packaging/deb/$pkg.yaml" --packager deb --target "$out" >/dev/null
		echo "  $out"
	done
	made=$((made + 1))
done
if [ "$made" = 0 ]; then
	echo "deb: no Linux amd64, arm64, armv7 or armv6 binaries in dist/build: run scripts/release.sh" >&2
	exit 1
fi
