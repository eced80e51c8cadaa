#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Configures and builds pgstore: tools/build.sh into build/, or
# tools/build.sh asan into build-asan/ with ASan/UBSan (PGSTORE_SANITIZE=ON).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case ${1:-} in
    "")   dir=build;      opts=() ;;
    asan) dir=build-asan; opts=(-DPGSTORE_SANITIZE=ON) ;;
    *)    echo "usage: $0 [asan]" >&2; exit 2 ;;
esac
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${opts[@]}"
cmake --build "$dir" -j2
