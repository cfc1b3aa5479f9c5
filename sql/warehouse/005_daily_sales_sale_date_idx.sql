-- The partition column: a run's data interval filter is an index range scan.
create index if not exists "daily_sales_sale_date_idx" on "retail"."daily_sales" ("sale_date");
