-- SPDX-License-Identifier: MIT
-- rawpq — the benchmarks' baseline: libpq called straight from LuaJIT's
-- FFI, with nothing of pgstore in between. Parameters go as text (nil is
-- NULL); results are only counted.
--
--   local conn = rawpq.connect(dsn)          -- raises on failure
--   conn:exec(sql, ...)               → ntuples (raises on error)
--   conn:prepare(name, sql)           → true
--   conn:exec_prepared(name, ...)     → ntuples
--   conn:close()
local ffi = require "ffi"

ffi.cdef [[
typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
typedef unsigned int Oid;
PGconn *PQconnectdb(const char *conninfo);
int PQstatus(const PGconn *conn);
char *PQerrorMessage(const PGconn *conn);
void PQfinish(PGconn *conn);
PGresult *PQexecParams(PGconn *conn, const char *command, int nParams, const Oid *paramTypes,
                       const char *const *paramValues, const int *paramLengths,
                       const int *paramFormats, int resultFormat);
PGresult *PQprepare(PGconn *conn, const char *stmtName, const char *query, int nParams,
                    const Oid *paramTypes);
PGresult *PQexecPrepared(PGconn *conn, const char *stmtName, int nParams,
                         const char *const *paramValues, const int *paramLengths,
                         const int *paramFormats, int resultFormat);
int PQresultStatus(const PGresult *res);
char *PQresultErrorMessage(const PGresult *res);
int PQntuples(const PGresult *res);
void PQclear(PGresult *res);
]]

local pq = ffi.load("pq")

local CONNECTION_OK = 0
local PGRES_EMPTY_QUERY, PGRES_COMMAND_OK, PGRES_TUPLES_OK = 0, 1, 2

local select, tostring, error = select, tostring, error
local ffi_string, ffi_gc = ffi.string, ffi.gc

local _M = {}
local Conn = {}
local mt = { __index = Conn }

function _M.connect(dsn)
  local pg = pq.PQconnectdb(dsn or "")
  if pg == nil then error("rawpq: out of memory", 2) end
  if pq.PQstatus(pg) ~= CONNECTION_OK then
    local msg = ffi_string(pq.PQerrorMessage(pg))
    pq.PQfinish(pg)
    error("rawpq: " .. msg, 2)
  end
  return setmetatable({ pg = ffi_gc(pg, pq.PQfinish) }, mt)
end

-- Parameter arrays, reused; the Lua strings stay referenced in `keep`
-- until the call returns.
local MAXP = 64
local values = ffi.new("const char *[?]", MAXP)
local keep = {}

local function params(...)
  local n = select("#", ...)
  if n > MAXP then error("rawpq: too many parameters", 3) end
  for i = 1, n do
    local v = select(i, ...)
    if v == nil then
      values[i - 1] = nil
      keep[i] = false
    else
      local s = tostring(v)
      keep[i] = s
      values[i - 1] = s
    end
  end
  return n
end

local function finish(self, res, level)
  local st = pq.PQresultStatus(res)
  if st ~= PGRES_COMMAND_OK and st ~= PGRES_TUPLES_OK and st ~= PGRES_EMPTY_QUERY then
    local msg = res ~= nil and ffi_string(pq.PQresultErrorMessage(res)) or ffi_string(pq.PQerrorMessage(self.pg))
    pq.PQclear(res)
    error("rawpq: " .. msg, level)
  end
  local n = pq.PQntuples(res)
  pq.PQclear(res)
  return n
end

function Conn:exec(sql, ...)
  if not self.pg then error("rawpq: attempt to use a closed connection", 2) end
  local n = params(...)
  return finish(self, pq.PQexecParams(self.pg, sql, n, nil, values, nil, nil, 0), 3)
end

function Conn:prepare(name, sql)
  if not self.pg then error("rawpq: attempt to use a closed connection", 2) end
  finish(self, pq.PQprepare(self.pg, name, sql, 0, nil), 3)
  return true
end

function Conn:exec_prepared(name, ...)
  if not self.pg then error("rawpq: attempt to use a closed connection", 2) end
  local n = params(...)
  return finish(self, pq.PQexecPrepared(self.pg, name, n, values, nil, nil, 0), 3)
end

function Conn:close()
  local pg = self.pg
  self.pg = nil
  if pg then
    ffi_gc(pg, nil)
    pq.PQfinish(pg)
  end
end

return _M
