-- SPDX-License-Identifier: MIT
-- LuaRocks: `luarocks --lua-version 5.1 make` in a checkout builds with
-- CMake in a temporary directory (nothing is left in the checkout) and
-- installs the Lua modules, the pgstore.core C module (libpgstore linked in
-- statically) and the host, which finds its modules relative to the tree's
-- bin/. Needs libpq (found with pkg-config, Debian: libpq-dev), LuaJIT
-- (libluajit-5.1-dev), libedit-dev for the host's REPL, and lua-cjson at run
-- time (Debian: lua-cjson).
rockspec_format = "3.0"
package = "pgstore"
version = "0.1.0-1"
source = { url = "git+file://." }
description = {
  summary = "PostgreSQL-backed event store and companion stores for LuaJIT and OpenResty",
  license = "MIT",
}
-- LuaJIT is Lua 5.1 to LuaRocks; a 5.2+ tree is refused here, not at load.
dependencies = { "lua ~> 5.1" }
build = {
  type = "command",
  -- The module layout of a LuaRocks tree, seen from its bin/.
  build_command = [[
d=`mktemp -d` &&
cmake -S . -B "$d" -DCMAKE_BUILD_TYPE=Release -DPGSTORE_TESTS=OFF \
  -DPGSTORE_INSTALL_C_LIBRARY=OFF -DCMAKE_INSTALL_PREFIX="$(PREFIX)" \
  -DPGSTORE_LUA_DIR="$(LUADIR)" -DPGSTORE_LUA_CDIR="$(LIBDIR)" \
  -DPGSTORE_HOST_LUA_DIR=../share/lua/5.1 -DPGSTORE_HOST_LUA_CDIR=../lib/lua/5.1 &&
cmake --build "$d" -j2 && cmake --install "$d"
s=$?; rm -rf "$d"; exit $s]],
}
