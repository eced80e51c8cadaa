-- SPDX-License-Identifier: MIT
-- pgstore.cli.args — the small option parser the subcommands share:
-- `--name value`, `--flag`, and positional arguments, checked against a
-- spec so an unknown option is a usage error (exit 2), not a surprise.
local _M = {}

-- spec: { ["--follow"] = "flag", ["--types"] = "value", … }
-- → options (keys without dashes), positionals | nil, message
function _M.parse(args, spec)
  local opts, pos = {}, {}
  local i = 1
  while args[i] do
    local a = args[i]
    local name, inline = a:match("^(%-%-[%w%-]+)=(.*)$")
    name = name or a
    local kind = spec[name]
    if a:sub(1, 2) == "--" and not kind then
      return nil, "unknown option " .. name
    end
    local key = name:sub(3):gsub("%-", "_")
    if kind == "flag" then
      opts[key] = true
    elseif kind == "value" then
      local v = inline or args[i + 1]
      if v == nil then return nil, name .. " needs a value" end
      opts[key] = v
      if not inline then i = i + 1 end
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
