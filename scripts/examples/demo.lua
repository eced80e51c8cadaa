-- SPDX-License-Identifier: MIT
-- The quick-start demo: a small shop's orders as events (an upcaster chain
-- for old event shapes, a policy whose guard refuses absurd orders), two
-- projections run to the head, and the read model they build.
--   tools/demo.sh                      (the embedded default database)
--   pgstore --dsn … run scripts/examples/demo.lua [orders]
local core = require "pgstore.core"
local projection = require "pgstore.projection"

local here = (arg[0]:match("^(.*)/") or ".") .. "/orders/"
local domain = dofile(here .. "domain.lua")
local orders_wanted = tonumber(arg[1]) or 1500

local function say(fmt, ...) print(fmt:format(...)) end

-- A fresh shop on every run.
local es = assert(db:events{ table = "shop_events", notify = "shop_events" })
assert(es:truncate())
es:upcast(pgstore.upcasters{ here .. "upcasters.lua" })
pgstore.policies{ here .. "policy.lua" }:install(es)

-- 1. Orders come in.
local orders = domain.simulate(orders_wanted)
local t0, appended = core.now(), 0
for _, o in ipairs(orders) do
  appended = appended + assert(es:append(o.stream, o.events, { expected = "no_stream" })).count
end
local append_time = core.now() - t0
say("appended %d events for %d orders in %.2fs (%.0f events/s, one append per order)",
  appended, #orders, append_time, appended / append_time)

-- 2. The policy's guard at work: nothing is written.
local big = {}
for i = 1, 60 do big[i] = { sku = "CB-10", qty = 1, price = 7.25 } end
local _, err = es:append("order-99999", { { type = "OrderPlaced", data = { order_id = "order-99999",
  customer = "mallory", currency = "EUR", items = big } } })
say("a 60-line order was refused: %s: %s", err.code, err.message)

-- 3. Old events reach code in the newest shape.
local first = assert(es:read("order-00001", { limit = 1 }))[1]
local raw = assert(es:read("order-00001", { limit = 1, raw = true }))[1]
say("order-00001 was written as v%s %s\n  and reads as v%d: currency %s, %d line item(s)",
  raw.schema_version, raw.data, first.schema_version, first.data.currency, #first.data.items)

-- 4. The projections catch up, each batch and its checkpoint in one transaction.
local defs = {}
for _, name in ipairs{ "customer_totals", "daily_sales" } do
  defs[#defs + 1] = assert(projection.load(here .. "projections/" .. name .. ".lua"))
end
local runner = assert(projection.runner(db, defs, { events = es, rebuild = true, once = true,
  say = function(msg) io.stderr:write(msg, "\n") end }))
local res = assert(runner:run())
runner:close()
say("projected %d events into 2 read models in %.2fs (%.0f events/s)", res.events, res.seconds,
  res.events / res.seconds)

-- 5. The read model.
say("\n%-10s %-4s %7s %9s %12s", "customer", "cur", "orders", "cancelled", "revenue")
for _, r in ipairs(assert(db:query([[select customer, currency, orders, cancelled, revenue_cents
    from customer_totals order by customer, currency]]))) do
  say("%-10s %-4s %7d %9d %12.2f", r.customer, r.currency, r.orders, r.cancelled, r.revenue_cents / 100)
end
local units = assert(db:query([[select sku, sum(units) as units from daily_sales group by sku order by sku]]))
say("\n%-8s %8s", "sku", "shipped")
for _, r in ipairs(units) do say("%-8s %8d", r.sku, r.units) end
es:close()

-- 6. Where to go from here.
say([[

try next:
  pgstore status --table shop_events          where the store and its consumers stand
  pgstore tail --table shop_events --all --limit 5
  pgstore repl                                 a Lua prompt with `db` connected
  pgstore project --table shop_events %sprojections/*.lua
                                               run the projections, then follow live
  pgstore help                                 every command; pgstore help COMMAND]], here)
