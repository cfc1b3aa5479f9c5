#!/usr/bin/env bash
# PostgreSQL entrypoint of docker/local/Containerfile: on the first start (empty PGDATA) initdb with
# POSTGRES_USER / POSTGRES_PASSWORD, create POSTGRES_DB, run /docker-entrypoint-initdb.d/*.sql in it; then run
# the server on all interfaces with password (scram-sha-256) authentication.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-${user}}"

if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
  echo "[postgres] initialising ${PGDATA} (superuser ${user}, database ${db})"
  initdb --username="${user}" --pwfile=<(printf '%s\n' "${POSTGRES_PASSWORD}") --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 -D "${PGDATA}" >/dev/null
  printf 'host all all all scram-sha-256\n' >>"${PGDATA}/pg_hba.conf"
  # Set-up on the unix socket only, so that nobody connects before it is done.
  pg_ctl -D "${PGDATA}" -o "-c listen_addresses='' -k /run/postgresql" -w start >/dev/null
  if [[ "${db}" != postgres ]]; then
    psql -h /run/postgresql -U "${user}" -d postgres -v ON_ERROR_STOP=1 -q \
      -c "create database \"${db}\""
  fi
  for script in /docker-entrypoint-initdb.d/*.sql; do
    [[ -e "${script}" ]] || continue
    echo "[postgres] running ${script}"
    psql -h /run/postgresql -U "${user}" -d "${db}" -v ON_ERROR_STOP=1 -q -f "${script}"
  done
  pg_ctl -D "${PGDATA}" -m fast -w stop >/dev/null
fi
exec postgres -D "${PGDATA}" -c listen_addresses='*' -k /run/postgresql "$@"
