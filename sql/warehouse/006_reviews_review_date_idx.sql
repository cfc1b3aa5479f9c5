-- The partition column: a run's data interval filter is an index range scan.
create index if not exists "reviews_review_date_idx" on "retail"."reviews" ("review_date");
