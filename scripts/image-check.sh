#!/bin/bash
# Builds the hub's container image from the release (make image) and runs
# it with podman as a user would: the image's HEALTHCHECK answers, the
# hub's CA and owner connection string are in the /data volume, the CLI
# registers a device, the release's agent connects to the hub in the
# container and a stream through it reaches a service beside the agent.
# make release must have built linux/amd64.
#
# It runs the container on the host's network (no bridge to set up), on
# loopback ports found free; the container and its volume are removed at
# the end. Podman's settings apply (STORAGE_DRIVER,
# CONTAINERS_CONF).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/version.sh

name=tetherd-image-check
work=$(mktemp -d)
pids=()
cleanup() {
	status=$?
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	if [ $status != 0 ] && podman container exists "$name" 2>/dev/null; then
		echo "--- the hub's log:" >&2
		podman logs "$name" >&2 || true
	fi
	podman rm -f -t 5 "$name" >/dev/null 2>&1 || true
	podman volume rm -f "$name" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
fail() {
	echo "image-check: $*" >&2
	exit 1
}
# eventually COMMAND...: runs COMMAND until it succeeds, for up to 30 s;
# there is no event to wait on.
eventually() {
	for _ in $(seq 150); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	return 1
}

# freePort prints a loopback port free now. The hub must be told its
# port before it starts (its certificate and URLs name it), and so must
# the agent its target's.
freePort() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
https=$(freePort) mqtt=$(freePort) web=$(freePort)

sh scripts/image.sh
image=tetherd:$VERSION
[ "$(podman image inspect -f '{{.Config.User}}' "$image")" = 65532:65532 ] || fail "the image does not run as 65532:65532"

podman rm -f "$name" >/dev/null 2>&1 || true
podman volume rm -f "$name" >/dev/null 2>&1 || true
# Podman without systemd says it cannot set a timer for the HEALTHCHECK
# (an error line, not an error): kept for a failure to show.
podman run -d --name "$name" --network host -v "$name:/data" \
	-e TETHER_HOSTNAME=127.0.0.1 -e TETHER_LISTEN="127.0.0.1:$https" -e TETHER_MQTT_LISTEN="127.0.0.1:$mqtt" \
	"$image" >/dev/null 2>"$work/run.err" || {
	cat "$work/run.err" >&2
	fail "podman run"
}
# The image's own HEALTHCHECK: tetherd healthcheck, inside the container.
eventually podman healthcheck run "$name" || fail "the image's HEALTHCHECK did not pass within 30 s"
echo "HEALTHCHECK: healthy"

podman cp "$name:/data/ca.pem" "$work/ca.pem"
podman cp "$name:/data/owner.connstr" "$work/owner.connstr"
curl -sf --cacert "$work/ca.pem" "https://127.0.0.1:$https/healthz"

# A device, registered with the release's CLI, served by its agent.
tether=$PWD/dist/build/linux_amd64/tether
export XDG_CONFIG_HOME=$work/config
"$tether" login --ca "$work/ca.pem" - <"$work/owner.connstr"
"$tether" devices add dev1 --out "$work/dev1.connstr"
mkdir "$work/www"
echo "served beside the agent" >"$work/www/hello.txt"
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$web" >/dev/null 2>&1 &
pids+=($!)
eventually curl -sf "http://127.0.0.1:$web/hello.txt" || fail "the web service beside the agent did not start"
"$tether" agent --device-file "$work/dev1.connstr" --ca "$work/ca.pem" --allow "web=127.0.0.1:$web" >"$work/agent.log" 2>&1 &
pids+=($!)
connected() { "$tether" devices show dev1 | grep -q '"connectionState": *"Connected"'; }
eventually connected || {
	cat "$work/agent.log" >&2
	fail "dev1 did not connect within 30 s"
}
echo "dev1: connected"
got=$(printf 'GET /hello.txt HTTP/1.0\r\n\r\n' | "$tether" pipe dev1 web)
[[ $got == *"served beside the agent"* ]] || fail "a stream to dev1's web: $got"
echo "a stream through the hub in the container reached dev1's web service"
