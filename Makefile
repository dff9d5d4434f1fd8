# Two commands matter: `make demo` and `make test`. Both install what they need, idempotently.
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-ls
LS_VERSION := 1.23.2
BIN := $(VENV)/bin
UV := $(BIN)/uv

.PHONY: setup labelstudio system-deps browser-deps test test-unit demo docker-check serve worker lock bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(UV) pip install -q --python $(BIN)/python -r requirements.txt -r requirements-test.txt
	touch $@

# Label Studio lives in its own environment: it pins its own rq, redis and Django.
labelstudio: $(LS_VENV)/.installed

$(LS_VENV)/.installed: $(VENV)/.installed
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(UV) pip install -q --python $(LS_VENV)/bin/python label-studio==$(LS_VERSION)
	touch $@

# Debian packages the tests use: a private redis-server per run, headless Chromium for the pages
# (driven by node), and a compose implementation to check docker-compose.yml where docker has none.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if command -v docker >/dev/null && ! docker compose version >/dev/null 2>&1 \
	  && ! command -v docker-compose >/dev/null; then missing="$$missing docker-compose"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

# playwright-core drives Debian's chromium in tests/integration/test_browser.py; it downloads no
# browser. Needs node >= 20.
BROWSER := tests/integration/browser
browser-deps: $(BROWSER)/node_modules/.installed

$(BROWSER)/node_modules/.installed: $(BROWSER)/package.json $(BROWSER)/package-lock.json
	cd $(BROWSER) && npm ci --no-audit --no-fund
	touch $@

test: setup labelstudio system-deps browser-deps
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest -m "not integration"

# IMAGES=DIR (class subfolders, or flat with LABELS=a,b,...) labels your images instead of digits.
demo: setup labelstudio system-deps
	$(BIN)/python -m tools.demo

# The image built from a local Debian base and run for real, then the compose stack's wiring
# (README, "Docker"). Heavy: not part of `make test`. TORCH_VARIANT=cuda where the PyTorch CPU
# index is unreachable; COMPOSE=0 for the image alone.
docker-check: setup labelstudio system-deps
	tools/docker/check.sh

serve: setup
	$(BIN)/python -m ml_backend serve

worker: setup
	$(BIN)/python -m ml_backend worker

bench: setup
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lock: setup
	$(UV) pip compile requirements.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements.txt
	$(UV) pip compile requirements-test.in --python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements-test.txt

clean:
	rm -rf $(VENV) $(LS_VENV) $(BROWSER)/node_modules .pytest_cache .hypothesis
