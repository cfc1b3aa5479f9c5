-- One row per product, store and day as the nightly load writes it. No unique key on sale_id:
-- re-delivered load batches leave duplicate rows, and the pipelines must cope with them.
create table if not exists "retail"."daily_sales" (
    "sale_id" bigint not null,
    "product_id" int not null,
    "sale_date" date not null,
    "units" int,
    "revenue" numeric
);
