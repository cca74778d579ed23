#!/bin/sh
# Tether's benchmark harness: builds tetherd and tether, runs hub, agent and
# forwarder as processes on loopback with TLS on, measures them beside the
# direct and limit baselines, profiles them, and writes docs/benchmarks.md
# and docs/benchmarks.png. About 6 minutes on 2 cores; flags go through to
# the program (e.g. -quick for a short run, -write-docs=false to leave docs/
# alone; -h lists them). Needs only Go.
set -eu
cd "$(dirname "$0")/.."
exec go run ./bench/cmd/tetherbench "$@"
