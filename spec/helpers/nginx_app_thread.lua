-- SPDX-License-Identifier: MIT
-- Functions spec/helpers/nginx_app.lua runs with db:run: they execute in a
-- worker thread's VM with a plain pgstore db (no ngx API there).
local _M = {}

function _M.sum(db, list, s)
  local n = assert(db:query("select 0 as zero"))[1].zero
  for _, v in ipairs(list) do n = n + v end
  return n, s
end

function _M.raise()
  error("raised in the thread")
end

return _M
