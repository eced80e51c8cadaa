-- SPDX-License-Identifier: MIT
-- pgstore.cli.args — the small option parser the subcommands share:
-- `--name value`, `--flag`, repeated `--name value`, numbers, and
-- positional arguments, checked against a spec so an unknown option, a
-- missing value or a number out of range is a usage error (exit 2) before
-- anything connects, never a surprise later.
local options = require "pgstore.options"
local suggest = require "pgstore.cli.suggest"

local _M = {}

-- Number kinds a spec gives in place of "value": the text is read as a
-- number and held to the Lua API's own range rules (pgstore.options,
-- bounds from core.limits), so a flag takes exactly what the option it
-- feeds takes.
-- seconds(positive[, max]): a timeout, TTL or interval, fractions allowed.
function _M.seconds(positive, max) return { number = "seconds", positive = positive, max = max } end
-- whole(lo, hi): a count, cursor or version, written in digits.
function _M.whole(lo, hi) return { number = "whole", lo = lo, hi = hi } end

local function out_of_range(want, name, n)
  if want.number == "whole" then return options.int(n, name, want.lo, want.hi) end
  return options.seconds(n, name, want.positive, want.max)
end

-- name ("--limit"), text (as given), want (seconds() or whole())
-- → number | nil, message ("--limit must be …, got '1e308'")
function _M.number(name, text, want)
  local n = tonumber(text)
  -- A whole number is digits, and exactly the number they say: past 2^53
  -- a double would round 9007199254740993 to …992 without a word.
  if n and want.number == "whole"
     and not (text:match("^%-?%d+$") and ("%.0f"):format(n) == text:gsub("^(%-?)0+(%d)", "%1%2")) then
    n = nil
  end
  local bad = out_of_range(want, name, n or 0 / 0)
  if not bad then return n end
  return nil, (bad.message:gsub(", got .*$", function() return ", got '" .. text .. "'" end))
end

-- A command's options, written once for both parsing and its help: a list
-- of { "--name", kind, arg = "N", default = "…", help = "…" }, kind as in
-- parse's spec. → the list, with spec[name] = kind for parse.
function _M.options(list)
  for _, o in ipairs(list) do list[o[1]] = o[2] end
  return list
end

-- The "options:" lines of a list made by options(): each option, its
-- argument, what it does and its default.
function _M.describe(list)
  local lines = {}
  for _, o in ipairs(list) do
    local head = o[1] .. (o.arg and " " .. o.arg or "")
    local text = (o.help or "") .. (o.default and (" (default %s)"):format(o.default) or "")
    if #head > 20 then
      lines[#lines + 1] = "  " .. head
      lines[#lines + 1] = ("  %-20s %s"):format("", text)
    else
      lines[#lines + 1] = ("  %-20s %s"):format(head, text)
    end
  end
  return table.concat(lines, "\n")
end

-- spec: { ["--follow"] = "flag", ["--types"] = "value", ["--policy"] = "list",
--         ["--limit"] = _M.whole(0, 2 ^ 53), … } (or a list made by options())
-- → options (keys without dashes; a "list" is a table of its values),
--   positionals | nil, message
function _M.parse(args, spec)
  local opts, pos = {}, {}
  local i = 1
  while args[i] do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    name = name or a
    local kind = spec[name]
    if a:sub(1, 2) == "--" and not kind then
      local known = {}
      for k in pairs(spec) do if type(k) == "string" then known[#known + 1] = k end end
      table.sort(known)
      return nil, "unknown option " .. name .. suggest.hint(name, known)
    end
    local key = name:sub(3):gsub("%-", "_")
    if kind == "flag" then
      opts[key] = true
    elseif kind then
      local v = inline or args[i + 1]
      -- `--table --once`: the next option is no value
      if v == nil or (not inline and spec[v:match("^%-%-[%w%-]+") or ""]) then
        return nil, name .. " needs a value"
      end
      if not inline then i = i + 1 end
      if kind == "list" then
        opts[key] = opts[key] or {}
        opts[key][#opts[key] + 1] = v
      elseif kind == "value" then
        opts[key] = v
      else
        local n, msg = _M.number(name, v, kind)
        if not n then return nil, msg end
        opts[key] = n
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

-- "a,b,c" → { "a", "b", "c" } (nil stays nil)
function _M.list(s)
  if not s then return nil end
  local out = {}
  for item in s:gmatch("[^,]+") do out[#out + 1] = item end
  return out
end

return _M
