#!/usr/bin/env bash
# The test command (see README.md). On a fresh Debian machine it installs what the
# tests need (ffmpeg, chromium, nginx, promtool, the browser tests' npm package), then
# runs the formatter and linter checks, every Rust test (unit, property, integration
# with real clients), a smoke run of the bench harness and the headless-Chromium
# browser tests. Any missing tool is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

apt_install_pkg() {
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

apt_install() {
    local missing=()
    for pair in "$@"; do
        local cmd=${pair%%:*} pkg=${pair##*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        local sudo=""
        [[ $(id -u) -ne 0 ]] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# promtool (Debian's prometheus package) lints /metrics in tests/firsthour.rs. The
# pages' player libraries are vendored in static/vendor/ and built into the binary:
# no npm step for them (scripts/vendor.sh re-vendors).
apt_install ffmpeg:ffmpeg ffprobe:ffmpeg chromium:chromium nginx:nginx promtool:prometheus \
    node:nodejs npm:npm rtmpdump:rtmpdump python3:python3 redis-server:redis-server
# scripts/ffmpeg9.sh (a current static ffmpeg from PyPI's imageio-ffmpeg, for Enhanced
# FLV/RTMP fixtures) needs a venv.
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install_pkg python3-venv

if [[ -f tests/browser/package.json ]]; then
    log "npm packages for the browser tests"
    npm ci --prefix tests/browser --no-audit --no-fund
fi

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
log "cargo test"
cargo test --workspace
log "bench harness smoke run"
scripts/bench-smoke.sh
log "browser tests (headless Chromium)"
# `cargo test` above built target/debug/wsrelay (cargo builds the binary for the
# integration tests); a separate `cargo build` would rebuild dependencies with another
# feature set for nothing.
test -x target/debug/wsrelay || { echo "target/debug/wsrelay missing" >&2; exit 1; }
node --test --test-concurrency=1 tests/browser/
