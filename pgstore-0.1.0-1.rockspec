-- SPDX-License-Identifier: MIT
-- LuaRocks: `luarocks make` in a checkout builds with CMake and installs
-- the Lua modules, the pgstore.core C module, libpgstore and the host.
-- Needs libpq and LuaJIT headers (Debian: libpq-dev, libluajit2-5.1-dev),
-- libedit-dev for the host's REPL, and lua-cjson at run time.
rockspec_format = "3.0"
package = "pgstore"
version = "0.1.0-1"
source = { url = "git+file://." }
description = {
  summary = "PostgreSQL-backed event store and companion stores for LuaJIT and OpenResty",
  license = "MIT",
}
dependencies = { "lua >= 5.1" }
external_dependencies = {
  LIBPQ = { header = "libpq-fe.h" },
}
build = {
  type = "cmake",
  variables = {
    CMAKE_BUILD_TYPE = "Release",
    CMAKE_INSTALL_PREFIX = "$(PREFIX)",
    PGSTORE_LUA_DIR = "$(LUADIR)",
    PGSTORE_LUA_CDIR = "$(LIBDIR)",
  },
}
