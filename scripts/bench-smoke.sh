#!/usr/bin/env bash
# CI smoke run of the bench harness (benches/README.md): a few seconds of each part at
# small scale, so the harness cannot rot. Fails (exit != 0) on any error, any player
# or peer that fails or falls behind, or lost signaling messages (--strict).
# Needs ffmpeg (the harness generates its test stream with it) and redis-server (the
# signaling run across a 3-node cluster).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v ffmpeg >/dev/null || { echo "bench-smoke: ffmpeg is required (apt-get install ffmpeg)" >&2; exit 1; }

OUT=target/bench-smoke
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== bench smoke: build"
cargo build --release --bin wsrelay
cargo bench --no-run --bench load --bench fanout --bench signaling

echo "== bench smoke: harness self-test"
cargo bench --bench load -- self-test

# No node-media-server here (--no-peer): CI does not install it with npm.
echo "== bench smoke: live, 20 WS-FLV players, RTMP publisher, wsrelay and ceiling at windows 0 and 20 ms"
cargo bench --bench load -- live --strict --out-dir "$OUT" --no-peer \
  --players 20 --publish rtmp --windows 0,20 --ramp-ms 500 --warmup-secs 1 --secs 2 \
  --size 640x360 --media-secs 6

echo "== bench smoke: live, 20 HTTP-FLV players, WebSocket publisher (the ceiling: HTTP POST), window 20 ms"
cargo bench --bench load -- live --strict --out-dir "$OUT" --no-peer \
  --players 20 --play http --publish ws --windows 20 --ramp-ms 500 --warmup-secs 1 --secs 2 \
  --size 640x360 --media-secs 6

echo "== bench smoke: signaling, 20 peers in 4 rooms, 1000 msg/s and max; 200 idle peers"
cargo bench --bench load -- signal --strict --out-dir "$OUT" \
  --peers 20 --rooms 4 --rate 1000,max --warmup-secs 0.5 --secs 2 --idle-peers 200

echo "== bench smoke: signaling across a 3-node cluster, same-node and cross-node pairs, 90 idle peers"
command -v redis-server >/dev/null || { echo "bench-smoke: redis-server is required (apt-get install redis-server)" >&2; exit 1; }
cargo bench --bench load -- signal --cluster --strict --out-dir "$OUT" \
  --peers 10 --rate 1000 --placements same,cross --warmup-secs 0.5 --secs 1 --idle-peers 90

test -s "$OUT/live.jsonl" && test -s "$OUT/signal.jsonl" && test -s "$OUT/live.svg" \
  && test -s "$OUT/signal-cluster.jsonl" \
  || { echo "bench-smoke: missing outputs in $OUT" >&2; exit 1; }

echo "== bench smoke: criterion benches, one iteration each"
cargo bench --bench fanout --bench signaling -- --test

echo "bench smoke: ok"
