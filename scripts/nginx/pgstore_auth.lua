-- SPDX-License-Identifier: MIT
-- Bearer-token authentication for scripts/nginx/nginx.conf, run in
-- access_by_lua: a request without `Authorization: Bearer <token>` is
-- answered 401 with a `WWW-Authenticate: Bearer` challenge. The token is read
-- from a file once, by the master (init_by_lua); without a usable one nginx
-- does not start. Only its digest is kept, and compared in constant time.
local bit = require "bit"

local ngx = ngx
local byte, bor, bxor = string.byte, bit.bor, bit.bxor

local _M = {}

-- Shorter tokens are refused: `openssl rand -hex 32` makes one of 64.
local MIN_LENGTH = 32
local REALM = 'realm="pgstore"'

local digest -- ngx.sha1_bin of the token; nil: nothing is configured

local function refuse(why)
  error("pgstore_auth: " .. why .. "; nginx does not serve the example without a token", 0)
end

-- init_by_lua: configure{ token_file = path }. Raises (so nginx refuses to
-- start, or a reload keeps the old configuration) when the file is missing,
-- unreadable, empty, holds more than one token68 word, or a short one. No
-- message ever shows the file's content.
function _M.configure(c)
  local path = c and c.token_file
  if type(path) ~= "string" or path == "" then refuse("no token_file is configured") end
  local f, err = io.open(path, "rb")
  if not f then refuse("cannot read the token file (" .. tostring(err) .. ")") end
  local text = f:read("*a") or ""
  f:close()
  local token = text:gsub("%s+$", "") -- the newline `echo` or an editor leaves
  if token == "" then refuse("the token file " .. path .. " is empty") end
  -- RFC 6750's b64token: what a client can send verbatim in the header.
  if not token:match("^[%w%-%._~%+/]+=*$") then
    refuse("the token file " .. path .. " must hold one token of letters, digits and -._~+/ "
      .. "(one line, no spaces)")
  end
  if #token < MIN_LENGTH then
    refuse(("the token in %s is shorter than %d characters"):format(path, MIN_LENGTH))
  end
  digest = ngx.sha1_bin(token)
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

-- access_by_lua: returns when the request carries the token; otherwise
-- answers 401 and ends it. Wrong tokens are logged (the client's address,
-- never what it sent).
function _M.check()
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
