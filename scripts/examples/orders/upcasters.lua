-- SPDX-License-Identifier: MIT
-- OrderPlaced changed twice: v2 added the currency (everything before it
-- was in euros), v3 turned the single `amount` into line items. Old events
-- stay as they were written; readers see v3.
return {
  {
    type = "OrderPlaced", from = 1, to = 2,
    upcast = function(data)
      data.currency = data.currency or "EUR"
      return data
    end,
  },
  {
    type = "OrderPlaced", from = 2, to = 3,
    upcast = function(data)
      data.items = data.items or { { sku = "UNKNOWN", qty = 1, price = data.amount } }
      data.amount = nil
      return data
    end,
  },
}
