-- What the product_sales pipeline reads. A left join, so a sale of a product missing from the catalogue still
-- shows up (with null product columns) and is quarantined by validation instead of silently dropped.
create or replace view "retail"."product_sales" as
select
    sales."sale_id",
    sales."sale_date",
    products."name" as "product_name",
    products."category",
    products."price",
    sales."units",
    sales."revenue"
from "retail"."daily_sales" as sales
left join "retail"."products" as products on products."product_id" = sales."product_id";
