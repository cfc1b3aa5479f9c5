#!/usr/bin/env bash
# Entrypoint of the LM insights Airflow image (Dockerfile), in the manner of the official Airflow image's:
#   1. wait until the metadata database and the Celery broker accept TCP connections (compose engines that
#      ignore `depends_on: condition: service_healthy`, e.g. podman-compose on Podman < 4.6, start everything at
#      once; a remote worker may come up before the main machine); LM_WAIT_FOR_SERVICES_S bounds the wait
#      (default 300 s, 0 = do not wait)
#   2. `bash ...`, `sh ...`, `python ...` run as given; anything else runs as `airflow ARGS`
#      (`api-server`, `scheduler`, `celery worker --queues gpu`, ...).
set -euo pipefail

python - <<'PY'
import os
import socket
import sys
import time
from urllib.parse import urlsplit

DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379}
limit = float(os.environ.get("LM_WAIT_FOR_SERVICES_S", "300"))
targets = []
for var in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL"):
    url = urlsplit(os.environ.get(var, ""))
    if url.hostname:
        port = url.port or DEFAULT_PORTS.get(url.scheme.split("+")[0], 0)
        if port:
            targets.append((var, url.hostname, port))
deadline = time.monotonic() + limit
for var, host, port in targets if limit > 0 else []:
    while True:
        try:
            socket.create_connection((host, port), timeout=5).close()
            break
        except OSError as error:
            if time.monotonic() > deadline:
                sys.exit(f"[entrypoint] {host}:{port} ({var}) unreachable after {limit:.0f}s: {error}")
            time.sleep(1)
PY

case "${1:-}" in
  bash | sh | python | python3) exec "$@" ;;
  airflow) shift; exec airflow "$@" ;;
  *) exec airflow "$@" ;;
esac
