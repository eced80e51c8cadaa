-- SPDX-License-Identifier: MIT
-- rawpq — the benchmarks' baseline: libpq called directly through LuaJIT's
-- FFI, with no pgstore code in between, in the same process and against
-- the same cluster as the subject being measured.
--   rawpq.connect(dsn) → conn
--   conn:exec(sql, ...) → number of rows (raises on error)
--   conn:prepare(name, sql); conn:exec_prepared(name, ...) → number of rows
--   conn:query_prepared(name, ...) → array of rows as { [column] = text }
--   conn:wait_notify(timeout) → payload | nil (after conn:exec("LISTEN …"))
--   conn:close()
local ffi = require "ffi"

ffi.cdef [[
typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
PGconn *PQconnectdb(const char *conninfo);
int PQstatus(const PGconn *conn);
char *PQerrorMessage(const PGconn *conn);
void PQfinish(PGconn *conn);
PGresult *PQexecParams(PGconn *conn, const char *command, int nParams, const unsigned int *paramTypes,
  const char *const *paramValues, const int *paramLengths, const int *paramFormats, int resultFormat);
PGresult *PQprepare(PGconn *conn, const char *stmtName, const char *query, int nParams, const unsigned int *paramTypes);
PGresult *PQexecPrepared(PGconn *conn, const char *stmtName, int nParams, const char *const *paramValues,
  const int *paramLengths, const int *paramFormats, int resultFormat);
int PQresultStatus(const PGresult *res);
char *PQresultErrorMessage(const PGresult *res);
int PQntuples(const PGresult *res);
int PQnfields(const PGresult *res);
char *PQfname(const PGresult *res, int field_num);
char *PQgetvalue(const PGresult *res, int tup_num, int field_num);
int PQgetlength(const PGresult *res, int tup_num, int field_num);
void PQclear(PGresult *res);
int PQsocket(const PGconn *conn);
int PQconsumeInput(PGconn *conn);
typedef struct pgNotify { char *relname; int be_pid; char *extra; struct pgNotify *next; } PGnotify;
PGnotify *PQnotifies(PGconn *conn);
void PQfreemem(void *ptr);
struct pollfd { int fd; short events; short revents; };
int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]]

local pq = ffi.load("pq")
local PGRES_COMMAND_OK, PGRES_TUPLES_OK = 1, 2

local Conn = {}
Conn.__index = Conn

local _M = {}

function _M.connect(dsn)
  local c = pq.PQconnectdb(dsn or "")
  if pq.PQstatus(c) ~= 0 then
    local msg = ffi.string(pq.PQerrorMessage(c))
    pq.PQfinish(c)
    error("rawpq: " .. msg, 2)
  end
  return setmetatable({ c = c }, Conn)
end

local function params(...)
  local n = select("#", ...)
  local values = ffi.new("const char *[?]", n > 0 and n or 1)
  local keep = {}
  for i = 1, n do
    local v = select(i, ...)
    if v ~= nil then
      keep[i] = tostring(v)
      values[i - 1] = keep[i]
    end
  end
  return n, values, keep
end

local function check(self, res)
  local st = pq.PQresultStatus(res)
  if st ~= PGRES_COMMAND_OK and st ~= PGRES_TUPLES_OK then
    local msg = ffi.string(pq.PQresultErrorMessage(res))
    pq.PQclear(res)
    error("rawpq: " .. msg, 3)
  end
  return res
end

function Conn:exec(sql, ...)
  local n, values, keep = params(...)
  local res = check(self, pq.PQexecParams(self.c, sql, n, nil, values, nil, nil, 0))
  local rows = pq.PQntuples(res)
  pq.PQclear(res)
  local _ = keep
  return rows
end

function Conn:prepare(name, sql)
  pq.PQclear(check(self, pq.PQprepare(self.c, name, sql, 0, nil)))
end

function Conn:exec_prepared(name, ...)
  local n, values, keep = params(...)
  local res = check(self, pq.PQexecPrepared(self.c, name, n, values, nil, nil, 0))
  local rows = pq.PQntuples(res)
  pq.PQclear(res)
  local _ = keep
  return rows
end

-- Rows as Lua tables of strings: what a careful hand-written client does.
function Conn:query_prepared(name, ...)
  local n, values, keep = params(...)
  local res = check(self, pq.PQexecPrepared(self.c, name, n, values, nil, nil, 0))
  local nrows, ncols = pq.PQntuples(res), pq.PQnfields(res)
  local names = {}
  for j = 0, ncols - 1 do names[j] = ffi.string(pq.PQfname(res, j)) end
  local rows = {}
  for i = 0, nrows - 1 do
    local row = {}
    for j = 0, ncols - 1 do
      row[names[j]] = ffi.string(pq.PQgetvalue(res, i, j), pq.PQgetlength(res, i, j))
    end
    rows[i + 1] = row
  end
  pq.PQclear(res)
  local _ = keep
  return rows
end

-- Waits up to timeout seconds for one notification; returns its payload.
function Conn:wait_notify(timeout)
  local pfd = ffi.new("struct pollfd[1]")
  pfd[0].fd, pfd[0].events = pq.PQsocket(self.c), 1 -- POLLIN
  local n = pq.PQnotifies(self.c)
  if n == nil then
    if ffi.C.poll(pfd, 1, math.floor(timeout * 1000)) <= 0 then return nil end
    pq.PQconsumeInput(self.c)
    n = pq.PQnotifies(self.c)
  end
  if n == nil then return nil end
  local payload = ffi.string(n.extra)
  pq.PQfreemem(n)
  return payload
end

function Conn:close()
  if self.c ~= nil then pq.PQfinish(self.c) end
  self.c = nil
end

return _M
