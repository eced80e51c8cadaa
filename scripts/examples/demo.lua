-- SPDX-License-Identifier: MIT
-- The quick-start demo: creates a table, writes rows through the Lua API in
-- one transaction, reads them back and prints them. Run it with
--   tools/demo.sh            (embedded default database)
--   pgstore --dsn … run scripts/examples/demo.lua
assert(db:exec([[create table if not exists demo_orders (
  id bigserial primary key, customer text not null, total numeric(12,2) not null,
  placed_at timestamptz not null default now())]]))

local customers = { "ada", "grace", "edsger", "barbara" }
local n = assert(db:transaction(function(tx)
  for i = 1, 20 do
    assert(tx:exec("insert into demo_orders (customer, total) values ($1, $2)",
      customers[i % #customers + 1], i * 7.25))
  end
  return 20
end))
print(("wrote %d orders"):format(n))

local rows = assert(db:query([[select customer, count(*) as orders, sum(total) as total
  from demo_orders group by customer order by customer]]))
print(("%-10s %7s %10s"):format("customer", "orders", "total"))
for _, r in ipairs(rows) do
  print(("%-10s %7d %10s"):format(r.customer, r.orders, r.total))
end
