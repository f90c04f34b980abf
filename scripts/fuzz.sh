#!/usr/bin/env bash
# Time-boxed fuzzing of what peers send before any authentication: the RTMP command
# decoder and session (fuzz/), the FLV demuxer and script tags (flv/fuzz/) and the
# signaling JSON (signaling/fuzz/). cargo-fuzz needs nightly features; with the
# stable toolchain RUSTC_BOOTSTRAP=1 enables them. Usage: scripts/fuzz.sh [SECONDS]
# (per target, default 60). Not part of the test command (it takes minutes and a
# sanitizer build); the property tests beside the code run in every CI run.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
run() {
    local dir=$1 target=$2
    echo "== $dir: $target for ${secs}s"
    (cd "$dir" && cargo fuzz run "$target" -- -max_total_time="$secs" -rss_limit_mb=2048)
}
run . rtmp_command
run . rtmp_session
run flv demux
run flv script
for t in $(cd signaling && cargo fuzz list); do run signaling "$t"; done
