-- The demo retail warehouse: raw tables as they arrive from the shop's loads, and the views pipelines read.
create schema if not exists "retail";
