# `make run` starts the app, `make test` runs every test (what CI runs), `make test-fast` all but the slow ones
# (browser, crash, multi-process and benchmark tests: tests/conftest.py). Each sets up .venv first when needed:
# `make run` with requirements.txt, the test targets also with requirements-dev.txt (test tools and extras).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-requirements
DEV    := $(VENV)/.installed-dev-requirements

.PHONY: run test test-fast setup setup-dev clean-venv

setup: $(STAMP)

setup-dev: $(DEV)

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

$(DEV): $(STAMP) requirements-dev.txt requirements-extras.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(DEV)

run: $(STAMP)
	$(BIN)/streamlit run app.py --server.address 127.0.0.1

test: $(DEV)
	$(BIN)/python -m pytest

test-fast: $(DEV)
	$(BIN)/python -m pytest -m "not slow"

clean-venv:
	rm -rf $(VENV)
