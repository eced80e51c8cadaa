-- SPDX-License-Identifier: MIT
-- pgstore.repl.history — the REPL's history file: one entry per line
-- (a multi-line chunk is one entry: backslash and newline escaped), appended
-- as each entry is made so that parallel sessions lose nothing, only its
-- owner may read it, and it is trimmed to the newest `size` entries once it
-- holds twice that many.
--
-- Where it lives: $PGSTORE_HISTORY (empty: no file), else
-- $XDG_DATA_HOME/pgstore/history, else ~/.local/share/pgstore/history.
local getenv = os.getenv

local _M = { size = 1000 }

function _M.path()
  local p = getenv("PGSTORE_HISTORY")
  if p then return p ~= "" and p or nil end
  local xdg = getenv("XDG_DATA_HOME")
  if xdg and xdg ~= "" then return xdg .. "/pgstore/history" end
  local home = getenv("HOME")
  if home and home ~= "" then return home .. "/.local/share/pgstore/history" end
  return nil
end

local ENCODE = { ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r" }
local DECODE = { ["\\"] = "\\", n = "\n", r = "\r" }

function _M.encode(entry)
  return (entry:gsub("[\\\n\r]", ENCODE))
end

function _M.decode(line)
  return (line:gsub("\\(.)", DECODE))
end

-- Whether an entry is worth keeping: not blank, not starting with a space
-- (the way to keep a secret out of the history), not the previous one.
function _M.wanted(entry, previous)
  return entry:find("%S") ~= nil and not entry:match("^%s") and entry ~= previous
end

-- The newest `size` entries of the file, oldest first. `write(path, data,
-- mode)` trims the file when it has grown to twice the size.
function _M.load(path, size, write)
  size = size or _M.size
  local f = path and io.open(path, "r")
  if not f then return {} end
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  local first = math.max(1, #lines - size + 1)
  local entries = {}
  for i = first, #lines do entries[#entries + 1] = _M.decode(lines[i]) end
  if write and #lines >= 2 * size then
    local tmp = ("%s.%s%s.tmp"):format(path, os.time(), tostring(lines):match("%x+$"))
    local keep = {}
    for i = first, #lines do keep[#keep + 1] = lines[i] .. "\n" end
    if write(tmp, table.concat(keep), "w") and not os.rename(tmp, path) then os.remove(tmp) end
  end
  return entries
end

-- Appends one entry; returns true | nil, message.
function _M.append(path, entry, write)
  return write(path, _M.encode(entry) .. "\n", "a")
end

return _M
