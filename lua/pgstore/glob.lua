-- SPDX-License-Identifier: MIT
-- pgstore.glob — stream-name patterns for store policies, compiled once into
-- a Lua matcher (guards, snapshot rules) and into SQL (retention), which
-- must agree on every name; spec/policy_spec.lua checks both on one table.
--
-- Syntax (the whole name must match; case-sensitive; no path semantics):
--   *        any run of characters, also empty
--   ?        exactly one character (a UTF-8 character, not a byte)
--   [abc]    one ASCII character from the set; ranges [a-z0-9]; [!…] or [^…]
--            negates (any character, ASCII or not, outside the set);
--            `]` first in the set and `-` first or last are literal
--   \x       the character x itself (\*, \?, \[, \\)
-- Everything else stands for itself.
--
-- SQL: a LIKE pattern (% for *, _ for ? and for a class, with %, _ and \
-- escaped in literal parts) plus, only when the glob has a class, an
-- anchored POSIX regex that checks the classes exactly. The literal prefix
-- before the first wildcard becomes a range (name >= prefix AND name <
-- next(prefix)) so the heads table's primary key finds the streams.
local byte, char, format, concat = string.byte, string.char, string.format, table.concat
local type, ipairs = type, ipairs

local _M = {}

-- One UTF-8 character (lead byte, then continuation bytes). Lead bytes are
-- never continuation bytes, so backtracking cannot split a character.
local LUA_ANY = "[\1-\127\194-\244][\128-\191]*"

local function is_alnum(b)
  return (b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122)
end

local function lua_lit(b)
  if b < 128 and not is_alnum(b) then return "%" .. char(b) end
  return char(b)
end

local function like_lit(b)
  if b == 37 or b == 95 or b == 92 then return "\\" .. char(b) end -- % _ \
  return char(b)
end

local function re_lit(b)
  if b < 128 and not is_alnum(b) then return format("\\u%04x", b) end
  return char(b)
end

-- Parses a class starting after `[` at i; returns the set of bytes (as a
-- sorted array), whether negated, and the index after `]`.
local function parse_class(g, i)
  local negated = false
  local c = g:sub(i, i)
  if c == "!" or c == "^" then
    negated = true
    i = i + 1
  end
  local set, members, first = {}, {}, true
  local n = #g
  while true do
    if i > n then return nil, "unclosed '['" end
    local b = byte(g, i)
    if b == 93 and not first then break end -- ]
    if b == 92 then -- \x inside a class
      i = i + 1
      if i > n then return nil, "a trailing '\\' escapes nothing" end
      b = byte(g, i)
    end
    if b >= 128 then return nil, "a class '[…]' can hold only ASCII characters" end
    local lo, hi = b, b
    if g:sub(i + 1, i + 1) == "-" and i + 2 <= n and byte(g, i + 2) ~= 93 then
      hi = byte(g, i + 2)
      if hi == 92 then
        if i + 3 > n then return nil, "a trailing '\\' escapes nothing" end
        hi = byte(g, i + 3)
        i = i + 1
      end
      if hi >= 128 then return nil, "a class '[…]' can hold only ASCII characters" end
      if hi < lo then return nil, format("range '%s-%s' is reversed", char(lo), char(hi)) end
      i = i + 2
    end
    for x = lo, hi do
      if not set[x] then
        set[x] = true
        members[#members + 1] = x
      end
    end
    first = false
    i = i + 1
  end
  table.sort(members)
  if #members == 0 then return nil, "an empty class '[]'" end
  return members, negated, i + 1
end

-- The smallest string greater than every string starting with `p`, in
-- byte order (COLLATE "C"), as valid UTF-8; nil when there is none.
local function next_prefix(p)
  while #p > 0 do
    -- the last UTF-8 character and its code point
    local j = #p
    while j > 1 and byte(p, j) >= 128 and byte(p, j) < 192 do j = j - 1 end
    local ch, cp = p:sub(j), nil
    local b1 = byte(ch, 1)
    if b1 < 128 then cp = b1
    elseif b1 < 224 then cp = (b1 - 192) * 64 + (byte(ch, 2) - 128)
    elseif b1 < 240 then cp = ((b1 - 224) * 64 + (byte(ch, 2) - 128)) * 64 + (byte(ch, 3) - 128)
    else cp = (((b1 - 240) * 64 + (byte(ch, 2) - 128)) * 64 + (byte(ch, 3) - 128)) * 64 + (byte(ch, 4) - 128)
    end
    cp = cp + 1
    if cp == 0xD800 then cp = 0xE000 end
    if cp <= 0x10FFFF then
      local enc
      if cp < 0x80 then enc = char(cp)
      elseif cp < 0x800 then enc = char(192 + math.floor(cp / 64), 128 + cp % 64)
      elseif cp < 0x10000 then
        enc = char(224 + math.floor(cp / 4096), 128 + math.floor(cp / 64) % 64, 128 + cp % 64)
      else
        enc = char(240 + math.floor(cp / 262144), 128 + math.floor(cp / 4096) % 64,
          128 + math.floor(cp / 64) % 64, 128 + cp % 64)
      end
      return p:sub(1, j - 1) .. enc
    end
    p = p:sub(1, j - 1)
  end
  return nil
end
_M.next_prefix = next_prefix

local function valid_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local b = byte(s, i)
    local len = b < 128 and 1 or (b >= 194 and b <= 223) and 2 or (b >= 224 and b <= 239) and 3
      or (b >= 240 and b <= 244) and 4 or nil
    if not len or i + len - 1 > n then return false end
    for k = i + 1, i + len - 1 do
      local c = byte(s, k)
      if c < 128 or c > 191 then return false end
    end
    i = i + len
  end
  return true
end

-- glob.compile(pattern) → { glob, lua, like, regex?, prefix, upper? } | nil, message
function _M.compile(g)
  if type(g) ~= "string" then return nil, "a stream pattern must be a string, got " .. type(g) end
  if g == "" then return nil, "a stream pattern must not be empty (use '*' for every stream)" end
  if g:find("\0", 1, true) then return nil, "a stream pattern must not contain a NUL byte" end
  if not valid_utf8(g) then return nil, "a stream pattern must be valid UTF-8" end
  local lua, like, re, prefix = { "^" }, {}, { "^" }, {}
  local has_class, literal = false, true
  local i, n = 1, #g
  while i <= n do
    local b = byte(g, i)
    if b == 42 then -- *
      lua[#lua + 1], like[#like + 1], re[#re + 1] = ".*", "%", ".*"
      literal = false
      i = i + 1
    elseif b == 63 then -- ?
      lua[#lua + 1], like[#like + 1], re[#re + 1] = LUA_ANY, "_", "."
      literal = false
      i = i + 1
    elseif b == 91 then -- [
      local members, negated, after = parse_class(g, i + 1)
      if not members then return nil, format("bad pattern '%s': %s", g, negated) end
      local lset, rset = {}, {}
      for k, x in ipairs(members) do lset[k], rset[k] = lua_lit(x), re_lit(x) end
      if negated then
        lua[#lua + 1] = "[^" .. concat(lset) .. "\128-\191]" .. "[\128-\191]*"
        re[#re + 1] = "[^" .. concat(rset) .. "]"
      else
        lua[#lua + 1] = "[" .. concat(lset) .. "]"
        re[#re + 1] = "[" .. concat(rset) .. "]"
      end
      like[#like + 1] = "_"
      has_class, literal = true, false
      i = after
    else
      if b == 92 then -- \x
        i = i + 1
        if i > n then return nil, format("bad pattern '%s': a trailing '\\' escapes nothing", g) end
        b = byte(g, i)
      end
      lua[#lua + 1], like[#like + 1], re[#re + 1] = lua_lit(b), like_lit(b), re_lit(b)
      if literal then prefix[#prefix + 1] = char(b) end
      i = i + 1
    end
  end
  lua[#lua + 1], re[#re + 1] = "$", "$"
  local p = concat(prefix)
  return {
    glob = g,
    lua = concat(lua),
    like = concat(like),
    regex = has_class and concat(re) or nil,
    prefix = p,
    upper = p ~= "" and next_prefix(p) or nil,
    exact = literal and p or nil, -- a pattern without wildcards names one stream
  }
end

-- True when `name` matches the compiled glob.
function _M.match(c, name)
  return name:find(c.lua) ~= nil
end

-- The longest common prefix of strings, cut back to a whole UTF-8 character.
function _M.common_prefix(list)
  local p = list[1] or ""
  for k = 2, #list do
    local s, m = list[k], 0
    while m < #p and m < #s and byte(p, m + 1) == byte(s, m + 1) do m = m + 1 end
    p = p:sub(1, m)
  end
  local j = #p
  -- drop a trailing partial character
  local k = j
  while k >= 1 and byte(p, k) >= 128 and byte(p, k) < 192 do k = k - 1 end
  if k >= 1 and byte(p, k) >= 192 then
    local b = byte(p, k)
    local len = b >= 240 and 4 or b >= 224 and 3 or 2
    if j - k + 1 < len then p = p:sub(1, k - 1) end
  end
  return p
end

return _M
