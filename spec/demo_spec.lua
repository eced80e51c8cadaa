-- SPDX-License-Identifier: MIT
-- The README's main job: the orders demo end to end through the host, and
-- its read model checked against the events it appended.
local T = require "testenv"

describe("the orders demo", function()
  it("appends, refuses the absurd order, upcasts, projects, and the read model adds up", function()
    local out, rc = T.sh(("%s --dsn %q run %s/scripts/examples/demo.lua 300"):format(T.host(), T.dsn(), T.root()))
    assert.equal(0, rc, out)
    assert.matches("appended %d+ events for 300 orders", out)
    assert.matches("a 60%-line order was refused: rejected:", out)
    assert.matches("reads as v3: currency EUR", out)
    assert.matches("projected %d+ events into 2 read models", out)
    -- and says what to try next
    assert.matches("pgstore status --table shop_events", out, 1, true)
    assert.matches("pgstore repl", out, 1, true)
    assert.matches("projections/*.lua", out, 1, true)
    local db = T.connect()
    local totals = db:query("select sum(orders) as orders, sum(cancelled) as cancelled from customer_totals")[1]
    assert.equal(300, totals.orders)
    local cancelled = db:query("select count(*) as n from shop_events where type = 'OrderCancelled'")[1].n
    assert.equal(cancelled, totals.cancelled)
    assert.equal(0, db:query("select count(*) as n from shop_events where stream = 'order-99999'")[1].n)
    local shipped = db:query([[select coalesce(sum((i->>'qty')::int), 0) as units
      from shop_events, jsonb_array_elements(data->'items') i where type = 'OrderShipped']])[1].units
    assert.equal(shipped, db:query("select sum(units) as u from daily_sales")[1].u)
    db:close()
    T.assert_no_leaks()
  end)
end)
