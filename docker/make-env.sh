#!/usr/bin/env bash
# Write .env from .env.example, replacing every `change-me...` placeholder with a freshly generated secret
# (URL-safe, so it can sit inside the broker / database URLs). Refuses to overwrite an existing .env.
#   ./docker/make-env.sh            # -> .env
#   ./docker/make-env.sh other.env  # -> other.env
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-.env}"
if [[ -e "${target}" ]]; then
  echo "${target} exists; not overwriting it" >&2
  exit 1
fi
python3 - "${target}" <<'PY'
import base64
import os
import re
import secrets
import sys

lines = []
for line in open(".env.example").read().splitlines():
    match = re.match(r"^([A-Z0-9_]+)=change-me", line)
    if match:
        name = match.group(1)
        if name == "AIRFLOW_FERNET_KEY":
            value = base64.urlsafe_b64encode(os.urandom(32)).decode()
        else:
            value = secrets.token_hex(32)
        line = f"{name}={value}"
    lines.append(line)
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
os.chmod(sys.argv[1], 0o600)
print(f"wrote {sys.argv[1]}")
PY
