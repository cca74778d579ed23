#!/bin/bash
# Checks a release as a user meets it, on a Debian machine, as root (.ci/run
# runs it): builds it (make release, the targets below), runs the amd64
# binaries and checks every other one is built for its machine, checks
# SHA256SUMS and that a second build gives the same bytes (make
# reproducible), installs the amd64 .deb packages and runs the hub as its
# unit would, removes and purges them, then builds the container image
# from the release (make image, podman) and has a device connect to the
# hub running in it and carry a stream.
#
# It installs what it needs with apt (file, podman, runc, ca-certificates)
# and uses loopback ports 443, 8883, 18443 and 18883.
#
# Environment:
#   TARGETS   what make release builds (default: linux/amd64, which runs
#             here, and linux/armv6, a GOARM build with its armel packages;
#             a target takes about 80 s of CPU from an empty build cache,
#             all nine 12 minutes, too much for every CI run)
#   IMAGE     0 to skip the container image
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=${TARGETS:-linux/amd64 linux/armv6}
IMAGE=${IMAGE:-1}
export TARGETS

step() { printf '\n== %s (%ds)\n' "$1" "$SECONDS"; }
fail() {
	echo "check-release: $*" >&2
	exit 1
}

pkgs=()
command -v file >/dev/null || pkgs+=(file)
[ -d /usr/share/ca-certificates/mozilla ] || pkgs+=(ca-certificates)
if [ "$IMAGE" = 1 ]; then
	command -v podman >/dev/null || pkgs+=(podman)
	command -v runc >/dev/null || pkgs+=(runc)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
	step "apt-get install ${pkgs[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

step "make release"
make release
. scripts/version.sh

step "binaries"
# The machine's own run.
for cmd in "tetherd --version" "tether version"; do
	# shellcheck disable=SC2086 # a command and its argument
	out=$(dist/build/linux_amd64/$cmd 2>&1) || fail "$cmd: $out"
	echo "$out"
	[[ $out == *" $VERSION "* ]] || fail "$cmd says $out, not $VERSION"
done
# The others, by what file and go version -m say of them.
declare -A want=(
	[linux_amd64]='ELF 64-bit LSB executable, x86-64'
	[linux_arm64]='ELF 64-bit LSB executable, ARM aarch64'
	[linux_armv7]='ELF 32-bit LSB executable, ARM, EABI5'
	[linux_armv6]='ELF 32-bit LSB executable, ARM, EABI5'
	[linux_mips]='ELF 32-bit MSB executable, MIPS, MIPS32'
	[linux_mipsle]='ELF 32-bit LSB executable, MIPS, MIPS32'
	[linux_riscv64]='ELF 64-bit LSB executable, UCB RISC-V'
	[darwin_arm64]='Mach-O 64-bit arm64 executable'
	[windows_amd64]='PE32+ executable (console) x86-64'
)
declare -A setting=([linux_armv7]='GOARM=7' [linux_armv6]='GOARM=6' [linux_mips]='GOMIPS=softfloat' [linux_mipsle]='GOMIPS=softfloat')
for t in $TARGETS; do
	dir=${t/\//_}
	bins=(tetherd tether)
	[[ $dir == windows_* ]] && bins=(tether.exe)
	for b in "${bins[@]}"; do
		f=dist/build/$dir/$b
		desc=$(file -b "$f")
		[[ $desc == "${want[$dir]}"* ]] || fail "$f: $desc, want ${want[$dir]}"
		[[ $dir == windows_* || $desc == *"statically linked"* || $dir == darwin_* ]] || fail "$f is not static: $desc"
		info=$(go version -m "$f")
		grep -q $'\tbuild\t-trimpath=true' <<<"$info" || fail "$f: not built with -trimpath"
		grep -q $'\tbuild\tCGO_ENABLED=0' <<<"$info" || fail "$f: not built with CGO_ENABLED=0"
		! grep -q $'\tbuild\tvcs' <<<"$info" || fail "$f: built with a VCS stamp"
		if [ -n "${setting[$dir]:-}" ]; then
			grep -q $'\tbuild\t'"${setting[$dir]}" <<<"$info" || fail "$f: not built with ${setting[$dir]}"
		fi
		echo "$f: ${desc%%, BuildID*} ${setting[$dir]:-}"
	done
	ext=tar.gz
	[[ $dir == windows_* ]] && ext=zip
	[ -f "dist/tether_${VERSION}_$dir.$ext" ] || fail "no dist/tether_${VERSION}_$dir.$ext"
done
archive=dist/tether_${VERSION}_linux_amd64.tar.gz
listing=$(tar -tzf "$archive")
for f in tetherd tether LICENSE NOTICE THIRD_PARTY.md README.md deploy/tetherd.service deploy/tether-agent.service deploy/agent.toml; do
	grep -qx "tether_${VERSION}_linux_amd64/$f" <<<"$listing" || fail "$archive has no $f"
done
(cd dist && sha256sum -c SHA256SUMS)

step "make reproducible"
make reproducible

step ".deb packages"
deb_version=$(dpkg-deb -f dist/tetherd_*_amd64.deb Version)
dpkg -i "dist/tetherd_${deb_version}_amd64.deb" "dist/tether_${deb_version}_amd64.deb"
getent passwd tether >/dev/null || fail "no user tether"
[ "$(stat -c '%U %a' /var/lib/tetherd)" = "tether 700" ] || fail "/var/lib/tetherd: $(stat -c '%U %a' /var/lib/tetherd), want tether 700"
for unit in tetherd tether-agent; do
	[ -L /etc/systemd/system/multi-user.target.wants/$unit.service ] || fail "$unit.service is not enabled"
done
[ "$(stat -c '%a' /etc/tether/tetherd.env)" = 600 ] || fail "/etc/tether/tetherd.env is not 0600"
dpkg-query -W -f='${Conffiles}\n' tetherd tether | grep -q /etc/tether/agent.toml || fail "agent.toml is not a conffile"

# The hub as the unit runs it, with no systemd here: the unit's last
# ExecStart (the package's drop-in replaces deploy/'s) and Environment, as
# user tether with the one capability the unit grants.
unit_files=(/lib/systemd/system/tetherd.service /lib/systemd/system/tetherd.service.d/*.conf)
exec_start=$(sed -n 's/^ExecStart=\(.\+\)/\1/p' "${unit_files[@]}" | tail -n1)
data=$(sed -n 's/^Environment=TETHER_DATA=//p' "${unit_files[@]}" | tail -n1)
[ "$exec_start" = "/usr/bin/tetherd --listen :443 --mqtt-listen :8883" ] || fail "ExecStart: $exec_start"
[ "$data" = /var/lib/tetherd ] || fail "TETHER_DATA: $data"
hub_log=$(mktemp)
# shellcheck disable=SC2086 # ExecStart is a command line
(umask 0077 && exec env -i PATH=/usr/bin:/bin TETHER_DATA="$data" TETHER_HOSTNAME=localhost \
	setpriv --reuid tether --regid tether --init-groups \
	--inh-caps +net_bind_service --ambient-caps +net_bind_service $exec_start) >"$hub_log" 2>&1 &
hub=$!
ok=
for _ in $(seq 150); do
	if setpriv --reuid tether --regid tether --init-groups tetherd healthcheck --listen :443 >/dev/null 2>&1; then
		ok=1
		break
	fi
	kill -0 $hub 2>/dev/null || break
	sleep 0.2
done
[ -n "$ok" ] || {
	cat "$hub_log"
	fail "the packaged hub did not answer /healthz"
}
curl -sf --cacert "$data/ca.pem" https://localhost/healthz
[ "$(stat -c %U "$data/owner.connstr")" = tether ] || fail "owner.connstr is not the hub user's"
kill -TERM $hub
wait $hub || true
dpkg -r tether tetherd
[ ! -e /usr/bin/tetherd ] || fail "dpkg -r left /usr/bin/tetherd"
[ -e /etc/tether/tetherd.env ] || fail "dpkg -r removed the conffile /etc/tether/tetherd.env"
dpkg --purge tether tetherd
for f in /etc/tether/tetherd.env /etc/tether/agent.toml; do
	[ ! -e $f ] || fail "dpkg --purge left $f"
done
[ -d /var/lib/tetherd ] || fail "dpkg --purge removed the hub's data"
rm -rf /var/lib/tetherd "$hub_log"
userdel tether

if [ "$IMAGE" = 1 ]; then
	step "container image"
	# Podman where CI runs, itself in a container: vfs storage (no
	# overlay inside overlay); runc, since crun refuses its cgroups
	# ("cgroups in hybrid mode not supported, drop all controllers from
	# cgroupv2"); and limits no higher than this shell's, since raising
	# them needs CAP_SYS_RESOURCE ("setrlimit RLIMIT_NOFILE: Operation not
	# permitted"). Podman on a machine of its own needs none of it.
	conf=$(mktemp)
	cat >"$conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
	CONTAINERS_CONF=$conf STORAGE_DRIVER=vfs bash scripts/image-check.sh
	rm -f "$conf"
fi
step "release checked"
