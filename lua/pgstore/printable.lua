-- SPDX-License-Identifier: MIT
-- pgstore.printable — text that is safe to show on a terminal. Stream
-- names, types, consumers, lease owners, payloads and server messages come
-- from whoever wrote them; an escape sequence or a carriage return in one
-- would repaint the operator's screen or forge a line. Everything pgstore
-- prints about stored things goes through escape() below.
local format, gsub, byte, find = string.format, string.gsub, string.byte, string.find
local type, tostring, pairs, setmetatable = type, tostring, pairs, setmetatable

local _M = {}

-- Code points that are valid UTF-8 yet act on a terminal, reorder what it
-- shows or show nothing at all: the C1 controls, the soft hyphen, the
-- zero-width space, joiners and word joiner, the invisible operators, the
-- byte order mark, the line and paragraph separators, and the
-- bidirectional marks, embeddings, overrides and isolates. The invisible
-- ones would let `s1` and `s1` followed by U+200B look like one stream.
local function acts(cp)
  return (cp >= 0x80 and cp <= 0x9F) or cp == 0xAD or cp == 0x061C
    or (cp >= 0x200B and cp <= 0x200F) or (cp >= 0x2028 and cp <= 0x202E)
    or (cp >= 0x2060 and cp <= 0x2064) or (cp >= 0x2066 and cp <= 0x2069) or cp == 0xFEFF
end

local function hex_bytes(s)
  return (gsub(s, ".", function(c) return format("\\x%02X", byte(c)) end))
end

local function lua_code_point(cp) return format("\\u{%04X}", cp) end

-- A run of non-ASCII bytes (a lead byte and what continues it): the first
-- character kept when it is well-formed (not overlong, not a surrogate,
-- at most U+10FFFF) and harmless; one that acts is written by
-- `point(cp, character)`, bytes that are not well-formed UTF-8 by `bad`.
local function non_ascii(run, point, bad)
  local c = byte(run)
  local len, min = 0, 0
  if c >= 0xC2 and c <= 0xDF then len, min = 2, 0x80
  elseif c >= 0xE0 and c <= 0xEF then len, min = 3, 0x800
  elseif c >= 0xF0 and c <= 0xF4 then len, min = 4, 0x10000 end
  if len == 0 or #run < len then return bad(run) end
  local cp = c % (2 ^ (7 - len))
  for i = 2, len do cp = cp * 64 + byte(run, i) % 64 end
  local first
  if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then
    first = bad(run:sub(1, len))
  elseif acts(cp) then
    first = point(cp, run:sub(1, len))
  else
    first = run:sub(1, len)
  end
  return first .. bad(run:sub(len + 1))
end

local function lua_non_ascii(run) return non_ascii(run, lua_code_point, hex_bytes) end
local function itself(_, character) return character end
-- Keeps every well-formed character, even one that acts (for stored text).
local function well_formed(run) return non_ascii(run, itself, hex_bytes) end

-- The backslash too: escaped as `\\`, so `\027` in the output is always
-- an ESC that was there, never the four characters a stream was named with.
local CONTROLS = "[%z\1-\31\127\\]"
local classes = setmetatable({}, { __mode = "k" }) -- escapes table → its pattern

local function class_of(escapes)
  local class = classes[escapes]
  if not class then
    local set = {}
    for k in pairs(escapes) do set[#set + 1] = "%" .. k end
    class = "[%z\1-\31\127\\" .. table.concat(set) .. "]"
    classes[escapes] = class
  end
  return class
end

-- escape(s [, escapes]) → s with every control character (C0, DEL and the
-- Unicode ones above) written as an escape: `\027` for a byte below 32 or
-- DEL, `\xNN` for a byte that is not part of well-formed UTF-8, `\u{XXXX}`
-- for a code point that acts on the terminal (the forms Lua reads back).
-- Tabs and newlines are escaped too: one value stays on one line. A
-- backslash is `\\`, so the output reads back unambiguously.
-- `escapes` maps single ASCII characters to the caller's own escapes (the
-- pretty printer's `\n`, `\"`, `\\`); they take precedence.
function _M.escape(s, escapes)
  s = type(s) == "string" and s or tostring(s)
  local ascii = escapes and class_of(escapes) or CONTROLS
  if not find(s, ascii) and not find(s, "[\128-\255]") then return s end
  s = gsub(s, ascii, function(c)
    return escapes and escapes[c] or (c == "\\" and "\\\\") or format("\\%03d", byte(c))
  end)
  return (gsub(s, "[\128-\255][\128-\191]*", lua_non_ascii))
end

local function json_code_point(cp) return format("\\u%04X", cp) end
local function json_ascii(c) return format("\\u%04X", byte(c)) end
-- JSON has no escape for a byte: one that is not UTF-8 is shown as U+FFFD.
local function json_bad(s) return (gsub(s, ".", "\\uFFFD")) end
local function json_non_ascii(run) return non_ascii(run, json_code_point, json_bad) end

-- json(text) → JSON text (cjson's, or the server's jsonb) made safe for a
-- terminal and still JSON: C0 controls, DEL and the code points escape()
-- writes as `\u{XXXX}` become `\uXXXX`, bytes that are not UTF-8 U+FFFD.
-- Backslashes are left alone: in JSON they are the text's own escapes.
-- The encoders never write a raw control character, so one value stays on
-- one line.
function _M.json(s)
  if not find(s, "[%z\1-\31\127-\255]") then return s end
  s = gsub(s, "[%z\1-\31\127]", json_ascii)
  return (gsub(s, "[\128-\255][\128-\191]*", json_non_ascii))
end

-- utf8(s) → s as text PostgreSQL stores: every byte that is not part of
-- well-formed UTF-8, and NUL, written as `\xNN`; everything else as it was
-- (newlines, tabs, every valid character). For what a script raised or
-- wrote that the server keeps as text (a parked event's error).
function _M.utf8(s)
  s = type(s) == "string" and s or tostring(s)
  if not find(s, "[%z\128-\255]") then return s end
  s = gsub(s, "%z", "\\x00")
  return (gsub(s, "[\128-\255][\128-\191]*", well_formed))
end

return _M
