-- What the customer_reviews pipeline reads; a left join for the same reason as retail.product_sales.
create or replace view "retail"."customer_reviews" as
select
    reviews."review_id",
    reviews."review_date",
    products."name" as "product_name",
    products."category",
    reviews."rating",
    reviews."review_text"
from "retail"."reviews" as reviews
left join "retail"."products" as products on products."product_id" = reviews."product_id";
