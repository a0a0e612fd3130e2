PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench docker-base-image clean

install: $(STAMP)

# Reinstall only when the dependency list changes; the project itself is editable. Bytecode is compiled at
# install: sandboxed replicas and batch runners start on this interpreter and cannot write a cache of their own.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/studio up

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

bench: install
	@command -v wrk >/dev/null || { echo "make bench: the load generator wrk is missing: apt-get install wrk (Debian's package)" >&2; exit 2; }
	$(BIN)/python -m bench

# A Python base image for model images, made without any registry (Debian's mmdebstrap + docker import).
DOCKER_BASE_IMAGE ?= studio/python:3.11
docker-base-image:
	docker/base-image.sh $(DOCKER_BASE_IMAGE)

clean:
	rm -rf $(VENV) .studio
