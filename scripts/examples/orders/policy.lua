-- SPDX-License-Identifier: MIT
-- Orders: refuse absurd orders before they are written, snapshot busy
-- order streams every 20 events, and keep a year of history.
return {
  name = "orders",
  streams = "order-*",
  max_age = "365d",
  snapshot_every = 20,
  guard = function(stream, events)
    for _, e in ipairs(events) do
      if e.type == "OrderPlaced" and #(e.data.items or {}) > 50 then
        return nil, ("an order of %d line items is too large (at most 50)"):format(#e.data.items)
      end
    end
    return true
  end,
}
