#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's main job: installs what is missing, builds, and runs the demo
# on the embedded default database (no DSN: the host starts its own cluster).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/deps.sh
bash tools/build.sh >/dev/null
unset PGSTORE_DSN PGHOST PGPORT PGUSER PGDATABASE
exec build/pgstore run scripts/examples/demo.lua "$@"
