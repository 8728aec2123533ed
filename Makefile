# Two commands: `make run` starts reactor on its embedded default, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test check bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/activate
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" PORT=$(PORT) $(BIN)/python -m reactor dev

test: $(VENV)/.installed
	command -v strace >/dev/null && command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q strace wrk)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m reactor check --strict rules
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q tests

bench: $(VENV)/.installed
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var
