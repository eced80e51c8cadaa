-- SPDX-License-Identifier: MIT
-- pgstore.codec — how event data and metadata become the JSON text the
-- store keeps (jsonb), and back:
--   "json" (default): Lua values ↔ JSON via lua-cjson (JSON null ↔ pgstore.null)
--   "raw": strings of JSON text in and out, untouched (the server checks them)
--   { encode = fn(value) → json_text, decode = fn(json_text) → value }: your own
-- Each store gets a codec table of its own (es.codec): one that changes its
-- functions changes no other store's.
local cjson = require "cjson.safe"

local type, pcall = type, pcall

local _M = {}

local json = {
  name = "json",
  encode = function(v)
    local s, err = cjson.encode(v)
    if not s then error(err, 0) end
    return s
  end,
  decode = function(s)
    local v, err = cjson.decode(s)
    if v == nil and err then error(err, 0) end
    return v
  end,
}

local raw = {
  name = "raw",
  encode = function(v)
    if type(v) ~= "string" then error("the raw codec takes JSON text (a string), got " .. type(v), 0) end
    return v
  end,
  decode = function(s) return s end,
}

-- codec option → a new codec table, or nil and a message.
function _M.resolve(c)
  if c == nil or c == "json" then c = json elseif c == "raw" then c = raw end
  if type(c) == "table" then
    local name, encode, decode = c.name, c.encode, c.decode
    if type(encode) == "function" and type(decode) == "function" then
      return { name = name or "custom", encode = encode, decode = decode }
    end
  end
  return nil, "codec must be 'json', 'raw' or { encode = fn, decode = fn }"
end

-- Encodes with the codec; returns text or nil, message (never raises).
function _M.encode(codec, v)
  local ok, s = pcall(codec.encode, v)
  if not ok then return nil, tostring(s) end
  if type(s) ~= "string" then return nil, "codec encode returned " .. type(s) .. ", not a string" end
  return s
end

function _M.decode(codec, s)
  local ok, v = pcall(codec.decode, s)
  if not ok then return nil, tostring(v) end
  return v
end

return _M
