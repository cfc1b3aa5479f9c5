-- Customer reviews as scraped from the shop front. No unique key on review_id (re-scraped pages repeat rows).
create table if not exists "retail"."reviews" (
    "review_id" bigint not null,
    "product_id" int not null,
    "review_date" date not null,
    "rating" int,
    "review_text" text
);
