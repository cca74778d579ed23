#!/bin/bash
# Measures the idle agent's resident memory as bench/ takes row 5 ("agent
# RSS, idle"): tether built with CGO_ENABLED=0 and tetherd with the
# defaults, both from SRC (default: this checkout); a hub on loopback in a
# temporary folder; a device registered on it; then the agent started RUNS
# times (default 5), each time with --allow shell=@shell and a TCP allow.
# Once it logs "agent running" it is left 2 s to settle and VmRSS is read
# five times 200 ms apart, the least kept (bench's settledRSS); RssAnon and
# RssFile are read with it. Prints each start and the medians.
#
# Usage: scripts/agent-idle-rss.sh [SRC] [RUNS]
#   ALLOW  the agent's --allow flags (default: --allow shell=@shell
#          --allow echo=127.0.0.1:PORT, PORT a closed one)
set -euo pipefail

src=$(cd "${1:-$(dirname "$0")/..}" && pwd)
runs=${2:-5}
work=$(mktemp -d)
hub=
agent=
cleanup() {
	[ -n "$agent" ] && kill "$agent" 2>/dev/null || true
	[ -n "$hub" ] && kill "$hub" 2>/dev/null || true
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

(cd "$src" && go build -o "$work/tetherd" ./cmd/tetherd && CGO_ENABLED=0 go build -o "$work/tether" ./cmd/tether)

"$work/tetherd" --data "$work/data" --listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --hostname 127.0.0.1 >"$work/hub.log" 2>&1 &
hub=$!
addr=
for _ in $(seq 300); do
	addr=$(sed -n 's/.*msg="hub started" listen=\([^ ]*\).*/\1/p' "$work/hub.log")
	[ -n "$addr" ] && [ -f "$work/data/owner.connstr" ] && break
	sleep 0.1
done
[ -n "$addr" ] || { echo "the hub did not start:" >&2; cat "$work/hub.log" >&2; exit 1; }
owner=$(sed "s/HostName=[^;]*/HostName=$addr/" "$work/data/owner.connstr")
TETHER_HUB=$owner TETHER_CA=$work/data/ca.pem "$work/tether" devices add idle-rss --out "$work/dev.raw" >/dev/null 2>&1
sed "s/HostName=[^;]*/HostName=$addr/" "$work/dev.raw" >"$work/dev.cs"
chmod 600 "$work/dev.cs"
# A closed port: the allow is only parsed, never dialed.
read -r -a allow <<<"${ALLOW:---allow shell=@shell --allow echo=127.0.0.1:9}"

kb() { awk -v k="$1:" '$1 == k {print $2}' "$2"; }
for i in $(seq "$runs"); do
	TETHER_CA=$work/data/ca.pem "$work/tether" agent --device-file "$work/dev.cs" "${allow[@]}" >"$work/agent.log" 2>&1 &
	agent=$!
	for _ in $(seq 600); do
		grep -qs "agent running" "$work/agent.log" && break
		sleep 0.1
	done
	grep -q "agent running" "$work/agent.log" || { echo "the agent did not connect:" >&2; cat "$work/agent.log" >&2; exit 1; }
	sleep 2
	best=
	for _ in 1 2 3 4 5; do
		cp "/proc/$agent/status" "$work/status"
		v=$(kb VmRSS "$work/status")
		if [ -z "$best" ] || [ "$v" -lt "$best" ]; then
			best=$v
			cp "$work/status" "$work/best"
		fi
		sleep 0.2
	done
	kill "$agent"
	wait "$agent" 2>/dev/null || true
	agent=
	echo "$best $(kb RssAnon "$work/best") $(kb RssFile "$work/best")" >>"$work/results"
	echo "start $i: VmRSS $best kB, RssAnon $(kb RssAnon "$work/best") kB, RssFile $(kb RssFile "$work/best") kB"
done
med() { cut -d' ' -f"$1" "$work/results" | sort -n | awk '{v[NR]=$1} END {printf "%.2f", v[int((NR+1)/2)]/1024}'; }
echo "median of $runs: VmRSS $(med 1) MiB, RssAnon $(med 2) MiB, RssFile $(med 3) MiB; tether $(stat -c %s "$work/tether") bytes"
