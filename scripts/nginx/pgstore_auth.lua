-- SPDX-License-Identifier: MIT
-- Bearer-token authentication for scripts/nginx/nginx.conf, run in
-- server_rewrite_by_lua (before any location's rewrite or access phase): a
-- request without `Authorization: Bearer <token>` is answered 401 with a
-- `WWW-Authenticate: Bearer` challenge. The token is read from a file once,
-- by the master (init_by_lua); without a usable one nginx does not start.
-- Only its digest is kept, and compared in constant time.
local bit = require "bit"
local ffi = require "ffi"
require "resty.core.hash" -- declares ngx_http_lua_ffi_sha1_bin

local ngx = ngx
local C = ffi.C
local byte, bor, bxor = string.byte, bit.bor, bit.bxor

-- The token file is read with read(2) into a buffer that is zeroed after
-- hashing: the token never becomes a Lua string (strings cannot be wiped)
-- nor passes through a stdio buffer, so the workers, forked after this,
-- inherit no copy of it.
for _, decl in ipairs{
  "int open(const char *path, int flags, ...);",
  "long read(int fd, void *buf, size_t count);",
  "int close(int fd);",
  "char *strerror(int errnum);",
} do
  pcall(ffi.cdef, decl) -- already declared by another module: the same libc function
end

local _M = {}

-- Shorter tokens are refused: `openssl rand -hex 32` makes one of 64.
local MIN_LENGTH = 32
local REALM = 'realm="pgstore"'

local digest -- ngx.sha1_bin of the token; nil: nothing is configured

local function refuse(why)
  error("pgstore_auth: " .. why .. "; nginx does not serve the example without a token", 0)
end

-- Bytes a token may hold: RFC 6750's b64token, what a client can send
-- verbatim in the header (`=` only as trailing padding).
local TOKEN_BYTE = {}
for c in ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"):gmatch(".") do
  TOKEN_BYTE[c:byte()] = true
end
local SPACE = { [9] = true, [10] = true, [11] = true, [12] = true, [13] = true, [32] = true }
local EQUALS = ("="):byte()
local MAX_FILE = 4096
local EINTR = 4

-- The whole file into buf (MAX_FILE + 1 bytes). → bytes read | nil, why
local function read_file(path, buf)
  local fd = C.open(path, 0) -- O_RDONLY
  if fd < 0 then return nil, path .. ": " .. ffi.string(C.strerror(ffi.errno())) end
  local len = 0
  while len <= MAX_FILE do
    local n = C.read(fd, buf + len, MAX_FILE + 1 - len)
    if n == 0 then break end
    if n < 0 then
      local e = ffi.errno()
      if e ~= EINTR then
        C.close(fd)
        return nil, path .. ": " .. ffi.string(C.strerror(e))
      end
    else
      len = len + tonumber(n)
    end
  end
  C.close(fd)
  return len
end

-- What is wrong with the token in buf[0 .. len-1], if anything (never
-- saying what it holds). → length without trailing spaces, nil | nil, why
local function examine(path, buf, len)
  if len > MAX_FILE then
    return nil, ("the token file %s is longer than %d bytes"):format(path, MAX_FILE)
  end
  while len > 0 and SPACE[buf[len - 1]] do len = len - 1 end -- the newline `echo` or an editor leaves
  if len == 0 then return nil, "the token file " .. path .. " is empty" end
  local word = len
  while word > 0 and buf[word - 1] == EQUALS do word = word - 1 end
  local ok = word > 0
  for i = 0, word - 1 do ok = ok and TOKEN_BYTE[buf[i]] == true end
  if not ok then
    return nil, "the token file " .. path .. " must hold one token of letters, digits and -._~+/ "
      .. "(one line, no spaces)"
  end
  if len < MIN_LENGTH then
    return nil, ("the token in %s is shorter than %d characters"):format(path, MIN_LENGTH)
  end
  return len
end

-- init_by_lua: configure{ token_file = path }. Raises (so nginx refuses to
-- start, or a reload keeps the old configuration) when the file is missing,
-- unreadable, empty, longer than 4,096 bytes, holds more than one token68
-- word, or a short one. No message ever shows the file's content.
function _M.configure(c)
  local path = c and c.token_file
  if type(path) ~= "string" or path == "" then refuse("no token_file is configured") end
  local buf = ffi.new("unsigned char[?]", MAX_FILE + 1)
  local size, err = read_file(path, buf)
  if not size then refuse("cannot read the token file (" .. err .. ")") end
  local len
  len, err = examine(path, buf, size)
  local out = ffi.new("unsigned char[20]")
  if len then C.ngx_http_lua_ffi_sha1_bin(buf, len, out) end
  ffi.fill(buf, MAX_FILE + 1)
  if len then
    digest = ffi.string(out, 20)
    -- The same call over as many zero bytes overwrites what hashing the
    -- token left in the stack below this frame.
    C.ngx_http_lua_ffi_sha1_bin(buf, len, out)
  end
  if not len then refuse(err) end
end

-- Digests of equal length, compared without an early exit: the time taken
-- says nothing about how much of a guess was right. Hashing first also
-- hides the token's length. (Collisions do not matter here: the digest is
-- never shown, so a match still needs the token.)
local function same(a, b)
  local diff = 0
  for i = 1, #b do diff = bor(diff, bxor(byte(a, i), byte(b, i))) end
  return diff == 0
end

local function deny(challenge)
  ngx.status = ngx.HTTP_UNAUTHORIZED
  ngx.header["WWW-Authenticate"] = challenge
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Cache-Control"] = "no-store"
  ngx.say('{"error":"unauthorized","message":"this route needs Authorization: Bearer <token>"}')
  return ngx.exit(ngx.HTTP_OK) -- the response is complete: no later phase runs
end

-- server_rewrite_by_lua: check{ open = { uri, … } } returns when the
-- request carries the token, or its URI ($uri, as nginx normalized it) is
-- one of `open`; otherwise answers 401 and ends it. Wrong tokens are logged
-- (the client's address, never what it sent).
function _M.check(c)
  local open = c and c.open
  if open then
    local uri = ngx.var.uri
    for i = 1, #open do
      if uri == open[i] then return end
    end
  end
  if not digest then
    -- configure never ran (a configuration other than the example's):
    -- deny everything rather than serve it open.
    ngx.log(ngx.ERR, "pgstore_auth: no token configured; every request is refused")
    return deny("Bearer " .. REALM)
  end
  local header = ngx.var.http_authorization
  local presented = header and header:match("^[Bb][Ee][Aa][Rr][Ee][Rr] +(%S+) *$")
  if not presented then return deny("Bearer " .. REALM) end
  if not same(ngx.sha1_bin(presented), digest) then
    ngx.log(ngx.WARN, "pgstore_auth: wrong bearer token from ", ngx.var.remote_addr)
    return deny("Bearer " .. REALM .. ', error="invalid_token"')
  end
end

return _M
