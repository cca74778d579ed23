# shellcheck shell=sh
# Sourced by scripts/release.sh, scripts/image.sh and the Dockerfile: what a
# release build stamps into its binaries, and the -ldflags that stamp it.
# Each value may be given in the environment (a build without .git, such as
# a container build, must); otherwise it comes from git:
#
#   VERSION             git describe --tags --always --dirty, without a tag's v
#                       (1.2.3, 1.2.3-4-gabc1234, abc1234-dirty)
#   COMMIT              the full commit hash
#   SOURCE_DATE_EPOCH   the commit's time (seconds since 1970): every time
#                       in the archives and packages, and the build date, so
#                       that the same commit gives the same bytes
#
# LDFLAGS is then the -ldflags of every release binary.

# The package whose variables -X sets: the one place to change if it moves.
VERSION_PKG=github.com/tether-io/tether/internal/version

if { [ -z "${VERSION:-}" ] || [ -z "${COMMIT:-}" ] || [ -z "${SOURCE_DATE_EPOCH:-}" ]; } &&
	! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "no git checkout here: give VERSION, COMMIT and SOURCE_DATE_EPOCH (a container build: --build-arg)" >&2
	exit 2
fi
if [ -z "${VERSION:-}" ]; then
	VERSION=$(git describe --tags --always --dirty)
fi
# Tag v1.2.3 is release 1.2.3, in file names as in tetherd --version.
case $VERSION in
v[0-9]*) VERSION=${VERSION#v} ;;
esac
if [ -z "${COMMIT:-}" ]; then
	COMMIT=$(git rev-parse HEAD)
fi
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
fi
case $SOURCE_DATE_EPOCH in
'' | *[!0-9]*)
	echo "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH: want seconds since 1970" >&2
	exit 2
	;;
esac
# RFC 3339 in UTC; GNU date takes -d @N, BSD date -r N.
BUILD_DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null ||
	date -u -r "$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
export VERSION COMMIT SOURCE_DATE_EPOCH BUILD_DATE

# -s -w: no symbol table or DWARF; -buildid=: no build ID, which differs
# between machines.
# shellcheck disable=SC2034 # for the script that sources this one
LDFLAGS="-s -w -buildid= -X $VERSION_PKG.Version=$VERSION -X $VERSION_PKG.Commit=$COMMIT -X $VERSION_PKG.Date=$BUILD_DATE"
