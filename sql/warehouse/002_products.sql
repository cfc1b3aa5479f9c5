-- The product catalogue. price is nullable and unchecked on purpose: the catalogue feed sends what it sends.
create table if not exists "retail"."products" (
    "product_id" int primary key,
    "name" text not null,
    "category" text,
    "price" numeric,
    "description" text
);
