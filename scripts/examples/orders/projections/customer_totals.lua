-- SPDX-License-Identifier: MIT
-- Per customer: orders placed and cancelled, and revenue in cents by
-- currency (cancelled orders are taken back out).
return {
  name = "customer_totals",
  setup = [[
    create table if not exists customer_totals (
      customer text not null, currency text not null,
      orders int not null default 0, cancelled int not null default 0,
      revenue_cents bigint not null default 0,
      primary key (customer, currency));
    create table if not exists customer_orders (
      order_id text primary key, customer text not null, currency text not null, cents bigint not null)]],
  teardown = "drop table if exists customer_totals, customer_orders",
  batch = 500,
  handlers = {
    OrderPlaced = function(e, tx)
      local d, cents = e.data, 0
      for _, item in ipairs(d.items) do cents = cents + math.floor(item.qty * item.price * 100 + 0.5) end
      assert(tx:exec("insert into customer_orders values ($1, $2, $3, $4)", d.order_id, d.customer, d.currency, cents))
      assert(tx:exec([[insert into customer_totals as t (customer, currency, orders, revenue_cents)
        values ($1, $2, 1, $3) on conflict (customer, currency)
        do update set orders = t.orders + 1, revenue_cents = t.revenue_cents + excluded.revenue_cents]],
        d.customer, d.currency, cents))
    end,
    OrderCancelled = function(e, tx)
      local o = assert(tx:query("select customer, currency, cents from customer_orders where order_id = $1", e.data.order_id))[1]
      assert(o, "cancelled an order never placed: " .. e.data.order_id)
      assert(tx:exec([[update customer_totals set cancelled = cancelled + 1, revenue_cents = revenue_cents - $3
        where customer = $1 and currency = $2]], o.customer, o.currency, o.cents))
    end,
  },
}
