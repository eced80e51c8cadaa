-- SPDX-License-Identifier: MIT
-- `pgstore dev start|stop|status` — manage the embedded default cluster.
local dev = require "pgstore.devcluster"

local _M = { usage = "pgstore dev start|stop|status", summary = "manage the embedded default cluster" }

function _M.main(host, args)
  local sub = args[1]
  if sub == "start" then
    local dsn, err = dev.ensure(host.say)
    if not dsn then return host.fail(err) end
    print(("running (pid %s) in %s\ndsn: %s"):format(dev.pid() or "?", dev.home(), dsn))
    return 0
  elseif sub == "stop" then
    local ok, err = dev.stop()
    if not ok then return host.fail(err) end
    print("stopped")
    return 0
  elseif sub == "status" then
    local running, state = dev.status()
    if running then
      print(("running (pid %s) in %s\ndsn: %s"):format(dev.pid() or "?", dev.home(), dev.dsn()))
    else
      print(("%s (%s)"):format(state, dev.home()))
    end
    return running and 0 or 1
  end
  return host.usage_error("dev: expected start, stop or status", _M.usage)
end

return _M
