#!/usr/bin/env bash
# One-shot initialisation run by the `airflow-init` service on every `docker compose up`; idempotent.
#   1. refuse placeholder secrets copied unchanged from .env.example (PostgreSQL and Redis passwords included)
#   2. airflow db migrate (with the FAB auth manager, its tables too)
#   3. admin user: the SimpleAuthManager's password file, or with the FAB auth manager (docker/compose.fab.yml)
#      a FAB user with the Admin role
#   4. the `lm_gpu` pool (slots = GPU inference tasks that may run at once)
#   5. the `warehouse` connection (postgres)
# .env is the source of truth: the pool size and the connection are rewritten on every run.
set -euo pipefail

log() { printf '[airflow-init] %s\n' "$*"; }

# Every secret of docker-compose.yml: empty, the .env.example placeholder or a well-known default is refused.
placeholders=()
for var in AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET AIRFLOW__API__SECRET_KEY \
           AIRFLOW_ADMIN_PASSWORD WAREHOUSE_PASSWORD POSTGRES_PASSWORD REDIS_PASSWORD; do
  case "${!var:-}" in
    "" | change-me* | changeme* | password | secret | admin | airflow | postgres | redis | warehouse)
      placeholders+=("${var}") ;;
  esac
done
if ((${#placeholders[@]})); then
  log "ERROR: these settings are empty or still the .env.example placeholder: ${placeholders[*]}"
  log "Generate real secrets, e.g. ./docker/make-env.sh (writes .env from .env.example)."
  exit 1
fi

log "airflow $(airflow version)"
log "migrating the metadata database"
airflow db migrate

if [[ "${AIRFLOW__CORE__AUTH_MANAGER}" == *FabAuthManager ]]; then
  log "admin user '${AIRFLOW_ADMIN_USERNAME}' (FAB auth manager, role Admin; per-DAG roles: docs/security.md)"
  airflow users delete --username "${AIRFLOW_ADMIN_USERNAME}" >/dev/null 2>&1 || true
  airflow users create --username "${AIRFLOW_ADMIN_USERNAME}" --password "${AIRFLOW_ADMIN_PASSWORD}" \
    --role Admin --firstname Airflow --lastname Admin --email "${AIRFLOW_ADMIN_EMAIL:-admin@localhost}"
else
log "admin user '${AIRFLOW_ADMIN_USERNAME}' (SimpleAuthManager password file ${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE})"
mkdir -p "$(dirname "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}")"
python - <<'PY'
import json
import os

path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w") as f:
    json.dump({os.environ["AIRFLOW_ADMIN_USERNAME"]: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, f)
    f.write("\n")
os.chmod(path, 0o660)
PY
fi

log "pool lm_gpu: ${LM_GPU_POOL_SLOTS} slots"
airflow pools set lm_gpu "${LM_GPU_POOL_SLOTS}" \
  "GPU inference shards; size = sum of GPU worker concurrency over all GPU workers"

log "connection warehouse: postgres ${WAREHOUSE_USER}@${WAREHOUSE_HOST}:${WAREHOUSE_PORT}/${WAREHOUSE_DB}"
airflow connections delete warehouse >/dev/null 2>&1 || true
extra_args=()
if [[ -n "${WAREHOUSE_CONN_EXTRA:-}" ]]; then
  extra_args=(--conn-extra "${WAREHOUSE_CONN_EXTRA}")
fi
airflow connections add warehouse \
  --conn-type postgres \
  --conn-host "${WAREHOUSE_HOST}" \
  --conn-port "${WAREHOUSE_PORT}" \
  --conn-login "${WAREHOUSE_USER}" \
  --conn-password "${WAREHOUSE_PASSWORD}" \
  --conn-schema "${WAREHOUSE_DB}" \
  --conn-description "Data warehouse read by the insight pipelines (managed by docker/airflow-init.sh from .env)" \
  "${extra_args[@]}"

log "done"
