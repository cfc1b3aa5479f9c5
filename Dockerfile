# syntax=docker/dockerfile:1
#
# Airflow image of the LM insights platform: the official Airflow image plus requirements.txt and this
# project (`pip install -e .` gives the packages lm_engine and lm_insights; dags/ and sql/ are baked in so that
# every container on every machine runs the same code).
#
# Targets:
#   cpu  torch from the CPU wheel index     (api-server, scheduler, dag-processor, triggerer, CPU worker)
#   gpu  torch from a CUDA wheel index      (GPU worker; the host needs the NVIDIA driver + container toolkit)
# The torch wheel index is the build arg TORCH_INDEX_URL; each target has its own default, docker-compose.yml
# passes it from .env (TORCH_CPU_INDEX_URL / TORCH_GPU_INDEX_URL).
#
#   docker build --target cpu -t lm-insights-airflow:latest .
#   docker build --target gpu -t lm-insights-airflow-gpu:latest .

ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11

FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION} AS base
ENV LM_PROJECT_DIR=/opt/lm-insights \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
USER root
# /opt/airflow/auth holds the SimpleAuthManager password file (a named volume takes over this ownership).
RUN mkdir -p /opt/lm-insights /opt/airflow/auth \
 && chown -R airflow:0 /opt/lm-insights /opt/airflow/auth \
 && chmod -R g+rwX /opt/airflow/auth
USER airflow
WORKDIR /opt/lm-insights
COPY --chown=airflow:0 requirements.txt ./

# ---------------------------------------------------------------------------------------------------------
FROM base AS cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch first, from the chosen index: requirements.txt pins torch==X and X+cpu / X+cuNNN satisfy that pin,
# so the next pip call keeps this build instead of pulling the default one from PyPI.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' requirements.txt)"
RUN pip install -r requirements.txt
COPY --chown=airflow:0 pyproject.toml ./
COPY --chown=airflow:0 lm_engine/ lm_engine/
COPY --chown=airflow:0 plugins/ plugins/
COPY --chown=airflow:0 sql/ sql/
COPY --chown=airflow:0 dags/ dags/
COPY --chown=airflow:0 docker/ docker/
RUN pip install --no-deps -e . && python -c "import lm_engine, lm_insights, torch; print('torch', torch.__version__)"
ENV LM_DEVICE=cpu

# ---------------------------------------------------------------------------------------------------------
FROM base AS gpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# The CUDA wheels bring the CUDA runtime libraries (nvidia-* wheels); only the driver comes from the host.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==$(sed -n 's/^torch==\([^ ;#]*\).*/\1/p' requirements.txt)"
RUN pip install -r requirements.txt
COPY --chown=airflow:0 pyproject.toml ./
COPY --chown=airflow:0 lm_engine/ lm_engine/
COPY --chown=airflow:0 plugins/ plugins/
COPY --chown=airflow:0 sql/ sql/
COPY --chown=airflow:0 dags/ dags/
COPY --chown=airflow:0 docker/ docker/
RUN pip install --no-deps -e . && python -c "import lm_engine, lm_insights, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
ENV LM_DEVICE=cuda
