# syntax=docker/dockerfile:1
#
# Airflow image of the LM insights platform: Debian + Python 3.11, Airflow and requirements.txt installed with
# the project's constraints.txt (the set the test suite runs) into /opt/airflow-venv, and this project
# (`pip install -e .` gives the packages lm_engine and lm_insights; dags/ and sql/ are baked in so that every
# container on every machine runs the same code). Runs as the non-root user `airflow` (uid 50000, gid 0).
#
# Targets (one shared stage `app`; they differ only in the torch build and LM_DEVICE):
#   cpu  torch from the CPU wheel index     (api-server, scheduler, dag-processor, triggerer, CPU worker)
#   gpu  torch from a CUDA wheel index      (GPU worker; the host needs the NVIDIA driver + container toolkit)
# The torch wheel index is the build arg TORCH_INDEX_URL; docker-compose.yml passes it from .env
# (TORCH_CPU_INDEX_URL / TORCH_GPU_INDEX_URL). The gpu target refuses to build with a CPU-only torch.
#
#   docker build --target cpu -t lm-insights-airflow:latest .
#   docker build --target gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       -t lm-insights-airflow-gpu:latest .
#
# BASE_IMAGE: any Debian-based image with python3 (>= 3.11) and python3-venv; the default is the official
# Python image. tests/cluster builds this file on a Debian bookworm base made locally with mmdebstrap.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS app
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV AIRFLOW_HOME=/opt/airflow \
    LM_PROJECT_DIR=/opt/lm-insights \
    VIRTUAL_ENV=/opt/airflow-venv \
    PATH=/opt/airflow-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off
# curl: the healthchecks; dumb-init: PID 1 that forwards signals (DUMB_INIT_SETSID=0 gives Celery a warm shutdown).
# The airflow user's home is AIRFLOW_HOME; logs/ and auth/ exist with its ownership so that named volumes
# mounted there start out writable (Docker and Podman copy the ownership into a new volume).
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends curl dumb-init; \
    rm -rf /var/lib/apt/lists/*; \
    useradd --uid 50000 --gid 0 --home-dir "${AIRFLOW_HOME}" --create-home --shell /bin/bash airflow; \
    mkdir -p "${AIRFLOW_HOME}/logs" "${AIRFLOW_HOME}/auth" "${LM_PROJECT_DIR}"; \
    chown -R airflow:0 "${AIRFLOW_HOME}"; \
    chmod -R g+rwX "${AIRFLOW_HOME}"; \
    python3 -m venv "${VIRTUAL_ENV}"
WORKDIR ${LM_PROJECT_DIR}
COPY requirements.txt constraints.txt ./
# torch first, from the chosen index: requirements.txt pins torch==X and X+cpu / X+cuNNN satisfy that pin,
# so the next pip call keeps this build instead of pulling the default one from PyPI.
RUN set -eux; \
    pip install --index-url "${TORCH_INDEX_URL}" \
        "torch==$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' requirements.txt)"; \
    pip install -r requirements.txt -c constraints.txt
COPY pyproject.toml ./
COPY lm_engine/ lm_engine/
COPY plugins/ plugins/
COPY sql/ sql/
COPY dags/ dags/
COPY docker/ docker/
RUN set -eux; \
    pip install --no-deps -e .; \
    chmod 0755 docker/entrypoint.sh docker/airflow-init.sh; \
    python -c "import airflow, lm_engine, lm_insights, torch; print('airflow', airflow.__version__, 'torch', torch.__version__)"
USER airflow
EXPOSE 8080
# Waits for the metadata database and the broker, then runs `airflow ARGS` (or bash/python ARGS as given).
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/lm-insights/docker/entrypoint.sh"]
CMD ["version"]

# ---------------------------------------------------------------------------------------------------------
FROM app AS cpu
ENV LM_DEVICE=cpu

# ---------------------------------------------------------------------------------------------------------
FROM app AS gpu
# The CUDA wheels bring the CUDA runtime libraries (nvidia-* wheels); only the driver comes from the host.
RUN python -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'the gpu target needs a CUDA build of torch: pass --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cuNNN (got torch ' + torch.__version__ + ')')"
ENV LM_DEVICE=cuda
