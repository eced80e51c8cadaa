#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's C example, built as a user would: install the build to a
# fresh prefix, compile the example with nothing but `pkg-config pgstore`
# (dynamic and static), and run both against the test cluster.
# Usage: example.sh SOURCE_DIR BUILD_DIR   (needs PGSTORE_TEST_DSN)
set -euo pipefail
src=$1 build=$2
: "${PGSTORE_TEST_DSN:?PGSTORE_TEST_DSN is not set}"
tmp=$(mktemp -d /tmp/pgstore-example.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pc=$(find "$tmp/prefix" -name pgstore.pc | head -n 1)
[[ -n $pc ]] || { echo "no pgstore.pc installed" >&2; exit 1; }
export PKG_CONFIG_PATH=${pc%/pgstore.pc}
# Moved after installing: the .pc must find its prefix from where it is.
mv "$tmp/prefix" "$tmp/moved"
export PKG_CONFIG_PATH=${PKG_CONFIG_PATH/$tmp\/prefix/$tmp/moved}

# The example is the C block after the <!-- c-example --> marker.
awk '/<!-- c-example -->/ { on = 1; next } on && /^```c/ { grab = 1; next }
     grab && /^```/ { exit } grab { print }' "$src/README.md" >"$tmp/example.c"
[[ -s $tmp/example.c ]] || { echo "no C example found in README.md" >&2; exit 1; }

libdir=$(pkg-config --variable=libdir pgstore)
cc -std=c11 -Wall -Werror -o "$tmp/dynamic" "$tmp/example.c" $(pkg-config --cflags --libs pgstore) \
    -Wl,-rpath,"$libdir"
cc -std=c11 -Wall -Werror -o "$tmp/static" "$tmp/example.c" $(pkg-config --cflags pgstore) \
    "$libdir/libpgstore.a" $(pkg-config --static --libs pgstore | sed 's/-lpgstore\b//')

want=$'conflict: expected 0, actual 1\n1 Greeted {"to": "C"}'
for bin in dynamic static; do
    out=$("$tmp/$bin" "$PGSTORE_TEST_DSN" "greeting-$bin-$$-$RANDOM" 2>&1) || true
    if [[ $out != "$want" ]]; then
        printf '%s: unexpected output:\n%s\nwanted:\n%s\n' "$bin" "$out" "$want" >&2
        exit 1
    fi
done
# A server that cannot be reached is an error with exit status 1, not a crash.
for bin in dynamic static; do
    rc=0
    "$tmp/$bin" "host=127.0.0.1 port=1 connect_timeout=2" x >/dev/null 2>&1 || rc=$?
    [[ $rc -eq 1 ]] || { echo "$bin against no server: exit status $rc, wanted 1" >&2; exit 1; }
done
echo "the README's C example builds from the installed pgstore.pc and runs (dynamic and static)"
