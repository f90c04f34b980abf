#!/usr/bin/env bash
# Prints the path of a current static ffmpeg (9.x, with libx265, libsvtav1, libvpx,
# libopus; Enhanced RTMP/FLV for HEVC, AV1, VP9, Opus) for the tests that need more
# than Debian's ffmpeg 5.1. It comes from the PyPI package imageio-ffmpeg (pinned
# below), installed once into a venv under target/ffmpeg9; later runs only print the
# path. Everything but the path goes to stderr. Safe to run concurrently (a lock).
#
#   FFMPEG9=$(scripts/ffmpeg9.sh) && "$FFMPEG9" -version
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned wrapper; its wheel bundles the ffmpeg binary.
PACKAGE="imageio-ffmpeg==0.8.1"
VENV=target/ffmpeg9

say() { printf 'ffmpeg9.sh: %s\n' "$*" >&2; }

mkdir -p target
exec 9>target/ffmpeg9.lock
flock 9

exe_path() {
    "$VENV/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())'
}

if [[ ! -f "$VENV/.done" ]]; then
    command -v python3 >/dev/null 2>&1 || {
        say "python3 is required (apt-get install python3 python3-venv)"
        exit 1
    }
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >&2; then
        # Debian's python3 needs python3-venv for `-m venv` (ensurepip).
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "installing python3-venv"
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >&2
            rm -rf "$VENV"
            python3 -m venv "$VENV" >&2
        else
            say "python3 -m venv failed; install python3-venv"
            exit 1
        fi
    fi
    say "installing $PACKAGE into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$PACKAGE" >&2
    exe=$(exe_path)
    "$exe" -hide_banner -version | head -n 1 >&2
    touch "$VENV/.done"
fi

exe=$(exe_path)
[[ -x "$exe" ]] || {
    say "imageio-ffmpeg did not provide an executable ffmpeg ($exe)"
    exit 1
}
printf '%s\n' "$exe"
