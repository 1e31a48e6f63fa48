#!/usr/bin/env bash
# Whole-service benchmark on generated data (loopback only; every loop is bounded).
#   scripts/bench.sh [PROFILES]      default 200000
#   BENCH_KEEP_DIR=DIR scripts/bench.sh 1000000   keeps the store in DIR and reuses it next time
#   BENCH_CHUNK_PROFILES=1000000 BENCH_KEEP_DIR=DIR scripts/bench.sh 5000000   loads 1M at a time (disk)
# Prints generation, ingest, disk, preview latency, segment-job and estimate-throughput figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILES="${1:-200000}"
if ! command -v wrk >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1 || echo "wrk unavailable: skipping the throughput figure"
fi
cargo build --release --quiet
exec python3 scripts/bench.py "$PROFILES"
