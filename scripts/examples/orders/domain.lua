-- SPDX-License-Identifier: MIT
-- A small shop: customers place orders, some are cancelled, the rest ship.
-- `simulate(n, seed)` returns a deterministic list of appends (stream,
-- events) — the first tenth written in the oldest event shapes (v1, v2) to
-- show the upcasters at work.
local _M = {}

local CUSTOMERS = { "ada", "grace", "edsger", "barbara", "donald", "margaret", "ken", "frances" }
local SKUS = { { "KB-01", 49.90 }, { "MS-02", 19.50 }, { "MN-27", 289.00 }, { "CB-10", 7.25 }, { "HD-44", 129.00 } }

-- A tiny linear congruential generator: the same orders on every run.
local function rng(seed)
  local state = seed
  return function(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return math.floor(state / 65536) % n + 1 -- the high bits: the low ones cycle
  end
end

function _M.simulate(n, seed)
  local r = rng(seed or 42)
  local out = {}
  for i = 1, n do
    local id = ("order-%05d"):format(i)
    local customer = CUSTOMERS[r(#CUSTOMERS)]
    local items = {}
    for k = 1, r(3) do
      local sku = SKUS[r(#SKUS)]
      items[k] = { sku = sku[1], qty = r(4), price = sku[2] }
    end
    local placed
    if i <= n / 20 then       -- v1: one amount, no currency
      local amount = 0
      for _, it in ipairs(items) do amount = amount + it.qty * it.price end
      items = { { sku = "UNKNOWN", qty = 1, price = amount } }
      placed = { type = "OrderPlaced", schema_version = 1, data = { order_id = id, customer = customer, amount = amount } }
    elseif i <= n / 10 then   -- v2: with a currency, still one amount
      local amount = 0
      for _, it in ipairs(items) do amount = amount + it.qty * it.price end
      items = { { sku = "UNKNOWN", qty = 1, price = amount } }
      placed = { type = "OrderPlaced", schema_version = 2,
                 data = { order_id = id, customer = customer, amount = amount, currency = "EUR" } }
    else
      placed = { type = "OrderPlaced", schema_version = 3,
                 data = { order_id = id, customer = customer, currency = r(5) == 1 and "USD" or "EUR", items = items } }
    end
    local events = { placed }
    if r(10) == 1 then
      events[2] = { type = "OrderCancelled", data = { order_id = id, reason = "changed my mind" } }
    else
      events[2] = { type = "PaymentReceived", data = { order_id = id } }
      events[3] = { type = "OrderShipped", data = { order_id = id, items = items } }
    end
    out[i] = { stream = id, events = events }
  end
  return out
end

return _M
