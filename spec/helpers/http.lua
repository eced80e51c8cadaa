-- SPDX-License-Identifier: MIT
-- http — a small HTTP/1.1 client over LuaJIT's FFI sockets, for specs and
-- benchmarks against a local nginx: loopback only (127.0.0.1), every wait
-- bounded by poll(2).
--
--   local c = http.connect(port)                 -- keep-alive connection
--   local res = c:request("POST", "/streams/a", { ["If-Match"] = "3" }, body, 5)
--   -- res = { status = 201, headers = { etag = … }, body = "…", time = seconds }
--   local res = http.request(port, "GET", "/ping")   -- one-off
--   local s = http.sse(port, "/changes", { ["Last-Event-ID"] = "42" })
--   local ev = s:next(5)                          -- { id = "43", data = "…" } | nil, "timeout"
--   local stats = http.load{ port = p, connections = 32, duration = 10, make = fn }
--
-- Responses may have Content-Length or chunked bodies; an SSE stream is a
-- chunked body read as it comes.
local ffi = require "ffi"
local bit = require "bit"

local C = ffi.C
local type, tonumber, pairs, ipairs, error, setmetatable = type, tonumber, pairs, ipairs, error, setmetatable
local concat = table.concat
local format = string.format

-- Our own names (asm redirects), so other specs' declarations cannot clash.
pcall(ffi.cdef, [[
  struct pgs_http_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
  struct pgs_http_pollfd { int fd; short events; short revents; };
  struct pgs_http_timespec { long tv_sec; long tv_nsec; };
  int pgs_http_socket(int domain, int type, int protocol) asm("socket");
  int pgs_http_connect(int fd, const void *addr, unsigned int len) asm("connect");
  long pgs_http_send(int fd, const void *buf, size_t len, int flags) asm("send");
  long pgs_http_recv(int fd, void *buf, size_t len, int flags) asm("recv");
  int pgs_http_close(int fd) asm("close");
  int pgs_http_poll(struct pgs_http_pollfd *fds, unsigned long nfds, int timeout) asm("poll");
  int pgs_http_setsockopt(int fd, int level, int name, const void *val, unsigned int len) asm("setsockopt");
  int pgs_http_clock_gettime(int clk, struct pgs_http_timespec *ts) asm("clock_gettime");
]])

local AF_INET, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC = 2, 1, 2048, 524288
local IPPROTO_TCP, TCP_NODELAY = 6, 1
local MSG_NOSIGNAL = 0x4000
local POLLIN, POLLOUT = 1, 4
local EINPROGRESS, EAGAIN, EINTR = 115, 11, 4
local CLOCK_MONOTONIC = 1

local _M = {}

local ts = ffi.new("struct pgs_http_timespec")
local function now()
  C.pgs_http_clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end
_M.now = now

local pfd = ffi.new("struct pgs_http_pollfd[1]")
local function wait_fd(fd, events, deadline)
  while true do
    local left = deadline - now()
    if left <= 0 then return false end
    pfd[0].fd, pfd[0].events, pfd[0].revents = fd, events, 0
    local r = C.pgs_http_poll(pfd, 1, math.ceil(left * 1000))
    if r > 0 then return true end
    if r < 0 and ffi.errno() ~= EINTR then return false end
  end
end

local function htons(n) return bit.bor(bit.rshift(n, 8), bit.lshift(bit.band(n, 0xff), 8)) end

-- A non-blocking socket connected to 127.0.0.1:port. → fd | nil, err
local function open(port, deadline)
  local fd = C.pgs_http_socket(AF_INET, bit.bor(SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC), 0)
  if fd < 0 then return nil, "socket failed: errno " .. ffi.errno() end
  local one = ffi.new("int[1]", 1)
  C.pgs_http_setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, one, 4)
  local sa = ffi.new("struct pgs_http_sockaddr_in")
  sa.family, sa.port, sa.addr = AF_INET, htons(port), 0x0100007f -- 127.0.0.1, network order
  if C.pgs_http_connect(fd, sa, ffi.sizeof(sa)) ~= 0 then
    local e = ffi.errno()
    if e ~= EINPROGRESS then
      C.pgs_http_close(fd)
      return nil, "connect failed: errno " .. e
    end
    if not wait_fd(fd, POLLOUT, deadline) then
      C.pgs_http_close(fd)
      return nil, "connect timed out"
    end
    if bit.band(pfd[0].revents, 0x18) ~= 0 then -- POLLERR | POLLHUP
      C.pgs_http_close(fd)
      return nil, "connection refused"
    end
  end
  return fd
end
_M.open = open

local RECV_SIZE = 65536
local recv_buf = ffi.new("uint8_t[?]", RECV_SIZE)

-- Reads what is there. → string | "" (nothing yet) | nil (closed) , err
local function recv_now(fd)
  local n = C.pgs_http_recv(fd, recv_buf, RECV_SIZE, 0)
  if n > 0 then return ffi.string(recv_buf, n) end
  if n == 0 then return nil, "closed" end
  local e = ffi.errno()
  if e == EAGAIN or e == EINTR then return "" end
  return nil, "recv failed: errno " .. e
end
_M.recv_now = recv_now

-- Sends what it can now. → bytes sent | nil, err
local function send_now(fd, data, from)
  local n = C.pgs_http_send(fd, ffi.cast("const char *", data) + from - 1, #data - from + 1, MSG_NOSIGNAL)
  if n >= 0 then return tonumber(n) end
  local e = ffi.errno()
  if e == EAGAIN or e == EINTR then return 0 end
  return nil, "send failed: errno " .. e
end
_M.send_now = send_now

local function send_all(fd, data, deadline)
  local at = 1
  while at <= #data do
    local n, err = send_now(fd, data, at)
    if not n then return nil, err end
    at = at + n
    if at <= #data and not wait_fd(fd, POLLOUT, deadline) then return nil, "send timed out" end
  end
  return true
end

-- ---- requests and responses --------------------------------------------------------

-- The request text.
function _M.format_request(method, path, headers, body)
  local lines = { format("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path) }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v .. "\r\n" end
  if body then lines[#lines + 1] = "Content-Length: " .. #body .. "\r\n" end
  lines[#lines + 1] = "\r\n"
  if body then lines[#lines + 1] = body end
  return concat(lines)
end

-- Parses the head of a response in buf. → res (without body), body start | nil
local function parse_head(buf)
  local e = buf:find("\r\n\r\n", 1, true)
  if not e then return nil end
  local status = tonumber(buf:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then error("bad response: " .. buf:sub(1, 80)) end
  local headers = {}
  for k, v in buf:sub(1, e):gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
  return { status = status, headers = headers }, e + 4
end
_M.parse_head = parse_head

-- Decodes a chunked body from buf at `at`. → body, next | nil (incomplete)
local function parse_chunked(buf, at)
  local parts = {}
  while true do
    local line_end = buf:find("\r\n", at, true)
    if not line_end then return nil end
    local size = tonumber(buf:sub(at, line_end - 1):match("^%x+"), 16)
    if not size then error("bad chunk header") end
    if size == 0 then
      local fin = buf:find("\r\n", line_end + 2, true)
      if not fin then return nil end
      return concat(parts), fin + 2
    end
    if #buf < line_end + 2 + size + 1 then return nil end
    parts[#parts + 1] = buf:sub(line_end + 2, line_end + 1 + size)
    at = line_end + 2 + size + 2
  end
end

-- A whole response at the start of buf. → res, rest | nil
local function parse_response(buf, head_only)
  local res, at = parse_head(buf)
  if not res then return nil end
  if head_only or res.status == 204 or res.status == 304 then
    res.body = ""
    return res, buf:sub(at)
  end
  local len = tonumber(res.headers["content-length"])
  if len then
    if #buf < at + len - 1 then return nil end
    res.body = buf:sub(at, at + len - 1)
    return res, buf:sub(at + len)
  end
  if (res.headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
    local body, next_at = parse_chunked(buf, at)
    if not body then return nil end
    res.body = body
    return res, buf:sub(next_at)
  end
  return nil -- until the connection closes
end
_M.parse_response = parse_response

-- ---- keep-alive connections -------------------------------------------------------------

local Conn = {}
local conn_mt = { __index = Conn }

-- http.connect(port[, timeout]) → conn | nil, err
function _M.connect(port, timeout)
  local fd, err = open(port, now() + (timeout or 5))
  if not fd then return nil, err end
  return setmetatable({ fd = fd, buf = "" }, conn_mt)
end

-- Sends a request without waiting for the answer (see conn:receive).
function Conn:send(method, path, headers, body, timeout)
  local t0 = now()
  self.sent_at = t0
  self.head_only = method == "HEAD"
  return send_all(self.fd, _M.format_request(method, path, headers, body), t0 + (timeout or 5))
end

-- Waits for the response to the request sent. → res | nil, err
function Conn:receive(timeout)
  local deadline = now() + (timeout or 5)
  while true do
    local res, rest = parse_response(self.buf, self.head_only)
    if res then
      self.buf = rest
      res.time = now() - (self.sent_at or now())
      return res
    end
    local data, err = recv_now(self.fd)
    if not data then
      -- A body delimited by the connection closing.
      local head, at = parse_head(self.buf)
      if head and err == "closed" then
        head.body = self.buf:sub(at)
        self.buf = ""
        head.time = now() - (self.sent_at or now())
        return head
      end
      return nil, err
    end
    if data == "" and not wait_fd(self.fd, POLLIN, deadline) then return nil, "timeout" end
    self.buf = self.buf .. data
  end
end

-- conn:request(method, path[, headers[, body[, timeout]]]) → res | nil, err
function Conn:request(method, path, headers, body, timeout)
  local ok, err = self:send(method, path, headers, body, timeout)
  if not ok then return nil, err end
  return self:receive(timeout)
end

function Conn:close()
  if self.fd then C.pgs_http_close(self.fd) end
  self.fd = nil
end

-- http.request(port, method, path[, headers[, body[, timeout]]]) → res | nil, err
function _M.request(port, method, path, headers, body, timeout)
  local c, err = _M.connect(port, timeout)
  if not c then return nil, err end
  local h = { Connection = "close" }
  for k, v in pairs(headers or {}) do h[k] = v end
  local res
  res, err = c:request(method, path, h, body, timeout)
  c:close()
  return res, err
end

-- ---- Server-Sent Events -----------------------------------------------------------------

local Sse = {}
local sse_mt = { __index = Sse }

-- http.sse(port, path[, headers[, timeout]]) → stream | nil, err (err may
-- be the response when it is not 200)
function _M.sse(port, path, headers, timeout)
  local deadline = now() + (timeout or 5)
  local fd, err = open(port, deadline)
  if not fd then return nil, err end
  local h = { Accept = "text/event-stream" }
  for k, v in pairs(headers or {}) do h[k] = v end
  local ok
  ok, err = send_all(fd, _M.format_request("GET", path, h), deadline)
  if not ok then C.pgs_http_close(fd); return nil, err end
  local self = setmetatable({ fd = fd, raw = "", text = "", events = {}, head = 1, tail = 0 }, sse_mt)
  while not self.res do
    local data
    data, err = recv_now(fd)
    if not data then self:close(); return nil, err end
    if data == "" and not wait_fd(fd, POLLIN, deadline) then self:close(); return nil, "timeout" end
    self.raw = self.raw .. data
    local res, at = parse_head(self.raw)
    if res then
      self.res, self.raw = res, self.raw:sub(at)
    end
  end
  if self.res.status ~= 200 then
    local res = self.res
    self:close()
    return nil, res
  end
  self:parse()
  return self
end

-- Moves complete chunks from raw to text, and complete events to the queue.
function Sse:parse()
  while true do
    local line_end = self.raw:find("\r\n", 1, true)
    if not line_end then break end
    local size = tonumber(self.raw:sub(1, line_end - 1):match("^%x+"), 16)
    if not size then error("bad chunk in SSE stream: " .. self.raw:sub(1, 40)) end
    if size == 0 then self.ended = true; self.raw = ""; break end
    if #self.raw < line_end + 2 + size + 1 then break end
    self.text = self.text .. self.raw:sub(line_end + 2, line_end + 1 + size)
    self.raw = self.raw:sub(line_end + 2 + size + 2)
  end
  while true do
    local e = self.text:find("\n\n", 1, true)
    if not e then break end
    local block = self.text:sub(1, e)
    self.text = self.text:sub(e + 2)
    local ev, data = {}, {}
    for line in block:gmatch("([^\n]*)\n") do
      local k, v = line:match("^([^:]*):? ?(.*)$")
      if k == "data" then data[#data + 1] = v
      elseif k == "id" or k == "event" or k == "retry" then ev[k] = v
      elseif k == "" then ev.comment = v end
    end
    if #data > 0 then
      ev.data = concat(data, "\n")
      self.tail = self.tail + 1
      self.events[self.tail] = ev
    end
    if ev.id then self.last_id = ev.id end
  end
end

-- stream:next([timeout]) → event { id, data, event } | nil, "timeout" | "closed"
function Sse:next(timeout)
  local deadline = now() + (timeout or 5)
  while true do
    if self.head <= self.tail then
      local ev = self.events[self.head]
      self.events[self.head] = nil
      self.head = self.head + 1
      return ev
    end
    if self.ended or not self.fd then return nil, "closed" end
    local data, err = recv_now(self.fd)
    if not data then
      self.ended = true
      return nil, err
    end
    if data == "" then
      if not wait_fd(self.fd, POLLIN, deadline) then return nil, "timeout" end
    else
      self.raw = self.raw .. data
      self:parse()
    end
  end
end

function Sse:close()
  if self.fd then C.pgs_http_close(self.fd) end
  self.fd = nil
end

-- ---- load ------------------------------------------------------------------------------------

-- http.load{ port, connections = 32, duration = 10, requests = nil (per
-- connection), timeout = 10, make = function(conn_index, n) → method,
-- path, headers, body } → { requests, statuses = { [code] = n }, errors =
-- { [message] = n }, max_time, times = { seconds… }, elapsed }.
-- All connections keep-alive, each with one request in flight, multiplexed
-- with poll(2) in this process.
function _M.load(o)
  local n = o.connections or 32
  local deadline = o.duration and now() + o.duration
  local timeout = o.timeout or 10
  local fds = ffi.new("struct pgs_http_pollfd[?]", n)
  local conns, stats = {}, { requests = 0, statuses = {}, errors = {}, max_time = 0, times = {} }
  local function note_error(msg) stats.errors[msg] = (stats.errors[msg] or 0) + 1 end
  local function start(c)
    if (deadline and now() >= deadline) or (o.requests and c.count >= o.requests) then
      c.done = true
      return
    end
    if not c.fd then
      local fd, err = open(o.port, now() + timeout)
      if not fd then note_error(err); c.done = true; return end
      c.fd, c.buf = fd, ""
    end
    c.count = c.count + 1
    local method, path, headers, body = o.make(c.index, c.count)
    c.out, c.at, c.t0, c.head_only = _M.format_request(method, path, headers, body), 1, now(), method == "HEAD"
  end
  local t_start = now()
  for i = 1, n do
    conns[i] = { index = i, count = 0 }
    start(conns[i])
  end
  while true do
    local active = 0
    for i = 1, n do
      local c = conns[i]
      fds[i - 1].fd = c.done and -1 or c.fd
      fds[i - 1].events = c.out and POLLOUT or POLLIN
      fds[i - 1].revents = 0
      if not c.done then active = active + 1 end
    end
    if active == 0 then break end
    C.pgs_http_poll(fds, n, 100)
    local t = now()
    for i = 1, n do
      local c = conns[i]
      if not c.done then
        if t - c.t0 > timeout then
          note_error("timeout")
          C.pgs_http_close(c.fd)
          c.fd, c.out = nil, nil
          start(c)
        elseif fds[i - 1].revents ~= 0 then
          if c.out then
            local sent, err = send_now(c.fd, c.out, c.at)
            if not sent then
              note_error(err); C.pgs_http_close(c.fd); c.fd, c.out = nil, nil; start(c)
            else
              c.at = c.at + sent
              if c.at > #c.out then c.out = nil end
            end
          else
            local data, err = recv_now(c.fd)
            if not data then
              note_error(err or "closed"); C.pgs_http_close(c.fd); c.fd = nil; start(c)
            elseif data ~= "" then
              c.buf = c.buf .. data
              local res, rest = parse_response(c.buf, c.head_only)
              if res then
                c.buf = rest
                local dt = now() - c.t0
                stats.requests = stats.requests + 1
                stats.statuses[res.status] = (stats.statuses[res.status] or 0) + 1
                stats.times[#stats.times + 1] = dt
                if dt > stats.max_time then stats.max_time = dt end
                if o.on_response then o.on_response(c.index, res) end
                if (res.headers.connection or ""):lower() == "close" then
                  C.pgs_http_close(c.fd); c.fd = nil
                end
                start(c)
              end
            end
          end
        end
      end
    end
  end
  for i = 1, n do
    if conns[i].fd then C.pgs_http_close(conns[i].fd) end
  end
  stats.elapsed = now() - t_start
  return stats
end

return _M
