# Two commands on a fresh machine: `make demo` runs the demo pipelines, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt requirements-data.txt constraints.txt pyproject.toml | sha256sum | cut -c1-12)

.PHONY: demo test up stop bench lm-bench quality guard-quality system-deps clean

$(STAMP):
	@echo "[lm-insights] installing pinned requirements into $(VENV) (about 2 minutes on a fresh machine)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar off --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --progress-bar off --disable-pip-version-check --no-deps -r requirements-data.txt
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# Redis (the Celery broker of the two-queue test), Chromium (the browser check) and PostgreSQL with TLS (the
# connection test; the embedded server is built without OpenSSL) come from Debian.
system-deps:
	@command -v redis-server >/dev/null && command -v chromium >/dev/null && \
	  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
	  echo "[lm-insights] installing redis-server, chromium and postgresql with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server chromium postgresql; }

demo: $(STAMP)
	$(VENV)/bin/lm-insights demo

test: $(STAMP) system-deps
	$(PY) -m pytest -ra

up: $(STAMP)
	$(VENV)/bin/lm-insights up

stop: $(STAMP)
	$(VENV)/bin/lm-insights stop

bench: $(STAMP)
	$(PY) -m lm_insights.bench

# lm_engine fp32 / int8 / bf16 against sentence-transformers torch, ONNX and ONNX-int8, alternating rounds
# (docs/performance.md); on a shared machine run it under nice and compare ratios, not absolute figures
lm-bench: $(STAMP)
	$(PY) -m lm_engine bench

# accuracy of zero-shot, linear, finetune and SetFit on real reviews split by date (about 25 minutes on 2 cores)
quality: $(STAMP)
	$(PY) -m lm_engine quality --json artifacts/quality.json

# the toxic and inconsistent row flags: planted label errors in real reviews, toxicity against a word list, cost
guard-quality: $(STAMP)
	$(PY) -m lm_insights.guard.inconsistent_bench
	$(PY) -m lm_insights.guard.toxicity_bench

clean: stop
	rm -rf .local
