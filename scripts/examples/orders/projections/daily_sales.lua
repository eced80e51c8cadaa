-- SPDX-License-Identifier: MIT
-- Units sold per day and SKU, from shipments.
return {
  name = "daily_sales",
  setup = [[create table if not exists daily_sales (
    day date not null, sku text not null, units int not null, primary key (day, sku))]],
  teardown = "drop table if exists daily_sales",
  batch = 500,
  handlers = {
    OrderShipped = function(e, tx)
      for _, item in ipairs(e.data.items) do
        assert(tx:exec([[insert into daily_sales as s values ($1::timestamptz::date, $2, $3)
          on conflict (day, sku) do update set units = s.units + excluded.units]], e.time, item.sku, item.qty))
      end
    end,
  },
}
