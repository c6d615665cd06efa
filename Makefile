# One obvious way to run things: README commands = these targets = CI.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TOOLS   := .venv-tools
STAMP   := $(VENV)/.installed
EXTRAS  := gcp,spark,dev

.PHONY: demo test lint checkov package compliance up down status bench clean sysdeps install
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $(STAMP)

# checkov and terraform-compliance pin many packages: they get their own virtual environment.
$(TOOLS)/.installed: infra/terraform/requirements-tools.txt
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r infra/terraform/requirements-tools.txt
	touch $(TOOLS)/.installed

# Google's libsnappy (Debian) makes snappy Sparkey logs byte-identical to the C library's.
sysdeps:
	@ldconfig -p 2>/dev/null | grep -q 'libsnappy\.so' || { \
	  echo "installing Debian's libsnappy1v5 (byte-identical Sparkey snappy logs)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libsnappy1v5; }

install: $(STAMP) sysdeps

demo: $(STAMP) sysdeps
	$(BIN)/backbeat demo

lint: $(STAMP)
	$(BIN)/ruff check .
	terraform fmt -check -recursive infra/terraform

checkov: $(TOOLS)/.installed
	$(TOOLS)/bin/checkov --quiet --compact -d infra/terraform --framework terraform --config-file infra/terraform/.checkov.yaml

test: $(STAMP) sysdeps lint checkov
	$(BIN)/python -m pytest tests

package: $(STAMP)
	$(BIN)/backbeat package --out dist/functions

# Run where the google provider can be downloaded:  terraform plan -out plan.bin && terraform show -json plan.bin > plan.json
compliance: $(TOOLS)/.installed
	@test -n "$(PLAN)" || (echo "usage: make compliance PLAN=plan.json" && exit 2)
	$(TOOLS)/bin/terraform-compliance -p $(PLAN) -f infra/terraform/compliance

up: $(STAMP)
	$(BIN)/backbeat up

down: $(STAMP)
	$(BIN)/backbeat down

status: $(STAMP)
	$(BIN)/backbeat status

bench: $(STAMP)
	$(BIN)/python -m bench.kvstore
	$(BIN)/python -m bench.ann
	$(BIN)/python -m bench.dag
	$(BIN)/python -m bench.delivery

clean:
	rm -rf dist build .backbeat .pytest_cache
