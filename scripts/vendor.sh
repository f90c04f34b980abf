#!/usr/bin/env bash
# Re-vendors the player libraries the pages load from /vendor/ (mpegts.js, flv.js)
# into static/vendor/, from the npm registry, at the pinned versions below.
#
#   scripts/vendor.sh           download each pinned tarball (npm pack), check its
#                               sha256, copy its dist files and licence into
#                               static/vendor/NAME/, rewrite static/vendor/SHA256SUMS
#   scripts/vendor.sh --check   the same download and hash check, then fail unless the
#                               committed files are byte-identical to the tarball's
#
# The files are copied unchanged, so the committed copies can always be compared with
# the registry's. build.rs embeds static/ (vendor/ included) into the binary. To move
# to another version: change the version, run the script (it prints the new tarball's
# sha256 and stops), check that tarball, put its hash here and run again.
# Needs npm (any version: `npm pack` only downloads), sha256sum and tar.
set -euo pipefail
cd "$(dirname "$0")/.."

# name  version  sha256 of the npm tarball  files copied (paths inside the tarball)
PINS=(
    "mpegts.js 1.8.2 fc0632083671b7a5ee03fd80e479bdf9f20f41015b957969aaf86703fb1c7bc0 LICENSE dist/mpegts.js dist/mpegts.js.LICENSE.txt"
    "flv.js 1.6.2 efdc6c6e48661f5eb77bce392f3d3f91fe654916ed0d2c3b620f039a1f6f81d5 LICENSE dist/flv.min.js"
)

check=false
case "${1:-}" in
"") ;;
--check) check=true ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

command -v npm >/dev/null || {
    echo "vendor.sh needs npm (apt-get install npm)" >&2
    exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=static/vendor
status=0

for pin in "${PINS[@]}"; do
    read -r name version sha files <<<"$pin"
    echo "== $name@$version"
    (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
    tarball=$(ls "$work"/"${name}"-"${version}".tgz)
    actual=$(sha256sum "$tarball" | cut -d' ' -f1)
    if [[ "$actual" != "$sha" ]]; then
        echo "$name@$version: tarball sha256 is $actual, pinned $sha" >&2
        exit 1
    fi
    mkdir -p "$work/$name"
    tar -xzf "$tarball" -C "$work/$name"
    for f in $files; do
        src="$work/$name/package/$f"
        dst="$dest/$name/$f"
        if $check; then
            if ! cmp -s "$src" "$dst"; then
                echo "  $dst differs from $name@$version's $f" >&2
                status=1
            else
                echo "  $dst ok"
            fi
        else
            mkdir -p "$(dirname "$dst")"
            cp "$src" "$dst"
            echo "  $dst"
        fi
    done
done

if ! $check; then
    # Hashes of what is committed, checkable offline: (cd static/vendor && sha256sum -c SHA256SUMS)
    (cd "$dest" && find . -type f ! -name SHA256SUMS ! -name README.md | sort | sed 's|^\./||' |
        xargs sha256sum >SHA256SUMS)
    echo "wrote $dest/SHA256SUMS"
fi
exit $status
