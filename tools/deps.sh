#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages pgstore needs to build, test and demo; does
# nothing at all when every one of them is already installed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

installed() { [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]; }

want=(cmake make gcc pkg-config libpq-dev postgresql lua-cjson lua-busted
      nginx libnginx-mod-http-lua lua-resty-core libedit-dev tmux procps
      iproute2 valgrind openssl clang libclang-rt-14-dev wrk pgbouncer luarocks)

# LuaJIT: prefer luajit2 (what Debian's nginx Lua module uses), but never swap
# out a plain luajit that is already there: the two conflict.
if { installed luajit || installed libluajit-5.1-dev; } &&
   ! installed luajit2 && ! installed libluajit2-5.1-dev; then
    luajit=(luajit libluajit-5.1-dev)
else
    luajit=(luajit2 libluajit2-5.1-dev)
fi
if pkg-config --exists luajit 2>/dev/null; then
    command -v luajit >/dev/null || want+=("${luajit[0]}")
else
    want+=("${luajit[@]}")
fi

missing=()
for p in "${want[@]}"; do installed "$p" || missing+=("$p"); done
[[ ${#missing[@]} -eq 0 ]] && exit 0

log "installing: ${missing[*]}"
as_root apt-get update
as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends "${missing[@]}"

# nginx's postinst may start a server on port 80; tests run their own.
if [[ " ${missing[*]} " == *" nginx "* ]]; then
    { as_root service nginx stop || as_root nginx -s quit; } >/dev/null 2>&1 || true
fi
