-- SPDX-License-Identifier: MIT
-- pgstore.repl.grid — rows printed as psql prints them: aligned columns
-- under a header, wide values cut with "…", numbers to the right, and
-- "(N rows)". Rows are an array of tables with string keys and scalar
-- values (what db:query returns); anything else is not rows. Lua tables
-- keep no column order, so columns come in name order.
local printable = require("pgstore.printable").escape
local null = require("pgstore.core").null

local type, pairs, tostring = type, pairs, tostring
local concat, sort = table.concat, table.sort
local rep = string.rep

local _M = {}

local MAX_CELL = 40 -- display columns of one value before it is cut

local function scalar(v)
  local t = type(v)
  return t == "string" or t == "number" or t == "boolean" or v == null
end

-- is_rows(v) → true when v is a non-empty array of flat, string-keyed rows
function _M.is_rows(v)
  if type(v) ~= "table" or #v == 0 then return false end
  local n = #v
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then return false end
  end
  for i = 1, n do
    local row = v[i]
    if type(row) ~= "table" or getmetatable(row) then return false end
    for k, x in pairs(row) do
      if type(k) ~= "string" or not scalar(x) then return false end
    end
  end
  return true
end

-- Display width: bytes that do not continue a UTF-8 character.
local function width(s)
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

-- s cut to at most `max` display columns, the last one "…"
local function cut(s, max)
  if width(s) <= max then return s end
  local out, w = {}, 0
  for ch in s:gmatch("[%z\1-\127\192-\255][\128-\191]*") do
    if w + 1 > max - 1 then break end
    out[#out + 1] = ch
    w = w + 1
  end
  return concat(out) .. "…"
end

local function cell(v)
  if v == null then return "null" end
  return printable(tostring(v))
end

-- format(rows, terminal_width) → the text, without a final newline
function _M.format(rows, term_width)
  local names, seen = {}, {}
  for _, row in ipairs(rows) do
    for k in pairs(row) do
      if not seen[k] then seen[k] = true; names[#names + 1] = k end
    end
  end
  sort(names)
  local ncols = #names
  -- Each column as wide as its values (up to MAX_CELL); when that does not
  -- fit the terminal, an equal share each, never under 8.
  local room, total = MAX_CELL, 3 * ncols
  for _, name in ipairs(names) do
    local w = width(printable(name))
    for _, row in ipairs(rows) do
      local v = row[name]
      if v ~= nil then w = math.max(w, width(cell(v))) end
    end
    total = total + math.min(w, MAX_CELL)
  end
  if total > (term_width or 80) then
    room = math.max(8, math.min(MAX_CELL, math.floor(((term_width or 80) - 3 * ncols) / ncols)))
  end
  local widths, right, cells = {}, {}, {}
  for c, name in ipairs(names) do
    widths[c] = width(cut(printable(name), room))
    right[c] = true
  end
  for r, row in ipairs(rows) do
    cells[r] = {}
    for c, name in ipairs(names) do
      local v = row[name]
      local text = v == nil and "" or cut(cell(v), room)
      if v ~= nil and v ~= null and type(v) ~= "number" then right[c] = false end
      cells[r][c] = text
      if width(text) > widths[c] then widths[c] = width(text) end
    end
  end
  local function pad(text, c, align_right)
    local gap = rep(" ", widths[c] - width(text))
    return align_right and gap .. text or text .. gap
  end
  local lines, header, rule = {}, {}, {}
  for c, name in ipairs(names) do
    local text = cut(printable(name), room)
    local left = math.floor((widths[c] - width(text)) / 2) -- centred, as psql does
    header[c] = rep(" ", left) .. text .. rep(" ", widths[c] - width(text) - left)
    rule[c] = rep("-", widths[c])
  end
  lines[1] = (" " .. concat(header, " | ")):gsub("%s+$", "")
  lines[2] = "-" .. concat(rule, "-+-") .. "-"
  for r = 1, #rows do
    local parts = {}
    for c = 1, ncols do parts[c] = pad(cells[r][c], c, right[c]) end
    lines[#lines + 1] = (" " .. concat(parts, " | ")):gsub("%s+$", "")
  end
  lines[#lines + 1] = ("(%d row%s)"):format(#rows, #rows == 1 and "" or "s")
  return concat(lines, "\n")
end

return _M
