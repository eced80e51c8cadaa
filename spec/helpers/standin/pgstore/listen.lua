-- SPDX-License-Identifier: MIT
-- A stand-in for pgstore.listen, for the REPL spec on a tree that does not
-- have the real one: a real LISTEN on its own libpq connection (LuaJIT FFI,
-- as bench/rawpq.lua), with the documented shape — db:listen(channel) → l;
-- l:wait(seconds) → { channel, payload, pid } | nil, err ("timeout");
-- l:fd(); l:add(channel); l:close(). The spec puts it on LUA_PATH after
-- the host's own modules, so a real lua/pgstore/listen.lua takes precedence.
local ffi = require "ffi"
local errors = require "pgstore.errors"

ffi.cdef [[
typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;
typedef struct pgNotify { char *relname; int be_pid; char *extra; struct pgNotify *next; } PGnotify;
PGconn *PQconnectdb(const char *conninfo);
int PQstatus(const PGconn *conn);
char *PQerrorMessage(const PGconn *conn);
void PQfinish(PGconn *conn);
PGresult *PQexec(PGconn *conn, const char *query);
int PQresultStatus(const PGresult *res);
void PQclear(PGresult *res);
int PQsocket(const PGconn *conn);
int PQconsumeInput(PGconn *conn);
PGnotify *PQnotifies(PGconn *conn);
void PQfreemem(void *ptr);
char *PQescapeIdentifier(PGconn *conn, const char *str, size_t len);
typedef void (*PQnoticeProcessor)(void *arg, const char *message);
PQnoticeProcessor PQsetNoticeProcessor(PGconn *conn, PQnoticeProcessor proc, void *arg);
struct pollfd { int fd; short events; short revents; };
int poll(struct pollfd *fds, unsigned long nfds, int timeout);
]]

local pq = ffi.load("pq")
-- libpq prints notices (and a FATAL that arrives while idle) on stderr by
-- default, over the REPL's prompt; pgstore's own connections never print.
local quiet = ffi.cast("PQnoticeProcessor", function() end)
local PGRES_COMMAND_OK, POLLIN = 1, 1

local Listener = {}
Listener.__index = Listener

local _M = {}

local function fail(self)
  return nil, errors.new("connection", ffi.string(pq.PQerrorMessage(self.c)))
end

function Listener:add(channel)
  local id = pq.PQescapeIdentifier(self.c, channel, #channel)
  if id == nil then return fail(self) end
  local sql = "LISTEN " .. ffi.string(id)
  pq.PQfreemem(id)
  local res = pq.PQexec(self.c, sql)
  local ok = pq.PQresultStatus(res) == PGRES_COMMAND_OK
  pq.PQclear(res)
  if not ok then return fail(self) end
  return true
end

function Listener:fd()
  return self.c and pq.PQsocket(self.c) or nil
end

local function next_notification(self)
  if pq.PQconsumeInput(self.c) == 0 then return nil, select(2, fail(self)) end
  local n = pq.PQnotifies(self.c)
  if n == nil then return nil end
  local out = { channel = ffi.string(n.relname), payload = ffi.string(n.extra), pid = n.be_pid }
  pq.PQfreemem(n)
  return out
end

function Listener:wait(timeout)
  local n, err = next_notification(self)
  if n or err then return n, err end
  if (timeout or 0) > 0 then
    local p = ffi.new("struct pollfd[1]")
    p[0].fd, p[0].events = pq.PQsocket(self.c), POLLIN
    ffi.C.poll(p, 1, math.floor(timeout * 1000))
    n, err = next_notification(self)
    if n or err then return n, err end
  end
  return nil, errors.new("timeout", "no notification")
end

function Listener:close()
  if self.c then pq.PQfinish(self.c) end
  self.c = nil
end

-- A Lua callback may not run under a compiled FFI call: these stay interpreted.
for _, f in pairs(Listener) do
  if type(f) == "function" then jit.off(f, true) end
end

function _M.new(db, channel)
  local c = pq.PQconnectdb(db.opts.dsn)
  local self = setmetatable({ c = c }, Listener)
  pq.PQsetNoticeProcessor(c, quiet, nil)
  if pq.PQstatus(c) ~= 0 then
    local _, err = fail(self)
    self:close()
    return nil, err
  end
  local ok, err = self:add(channel)
  if not ok then
    self:close()
    return nil, err
  end
  return self
end
jit.off(_M.new, true)

return _M
