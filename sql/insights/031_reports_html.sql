-- The report as a self-contained HTML page (explain/html_report.py), beside the text one.
alter table {schema}.reports add column if not exists html text
