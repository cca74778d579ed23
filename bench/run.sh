#!/bin/sh
# Tether's benchmark harness: builds tetherd and tether, runs hub, agent and
# forwarder as processes on loopback with TLS on, measures them beside the
# direct and limit baselines, profiles them, and writes docs/benchmarks.md
# and docs/benchmarks.png. About 9 minutes on 2 cores; flags go through to
# the program (e.g. -quick for a short run, -write-docs=false to leave docs/
# alone, -only wan,streams10k,stalled for the loads of many streams on one
# connection alone, whose rows then replace theirs in the report; -h lists
# them). Needs only Go; the stalled load wants root for a network
# namespace of its own.
set -eu
cd "$(dirname "$0")/.."
exec go run ./bench/cmd/tetherbench "$@"
