# The course's two commands: `make book` renders the HTML book, `make test` runs every test.
# Both create an isolated environment (.venv), install the requirements and fetch the data first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Executed notebooks render sliders as self-contained HTML, even when make runs inside a Jupyter server.
export ADVLIB_SLIDER := static

.PHONY: env data book test unit notebooks lint clean

env: $(STAMP)

$(STAMP): requirements.txt requirements-peers.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-peers.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

data: env
	$(PY) -m advlib.data fetch fashion-mnist

book: data
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@echo
	@echo "The book is in $(CURDIR)/_build/html/index.html"

lint: env
	$(VENV)/bin/ruff check .

unit: data
	$(PY) -m pytest tests

notebooks: data
	$(PY) -m pytest --nbval-lax --nbval-current-env chapters

test: data lint
	$(PY) -m pytest tests chapters --nbval-lax --nbval-current-env

clean:
	rm -rf _build
