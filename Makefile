# The course's two commands: `make book` renders the HTML book, `make test` runs every test.
# Both create an isolated environment (.venv), install the requirements and fetch the data first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Executed notebooks render sliders as self-contained HTML, even when make runs inside a Jupyter server.
export ADVLIB_SLIDER := static

.PHONY: env data browser book test unit notebooks browser-test lint clean

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

# Debian's Chromium and its WebDriver for the browser test; installed with apt-get where we are root,
# skipped (and so is the browser test) elsewhere.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "browser: $$(command -v chromium), $$(command -v chromedriver)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    chromium chromium-driver >/dev/null && echo "browser: installed Debian's chromium and chromium-driver"; \
	else \
	  echo "browser: no Chromium here and no root to install it; the browser test will skip"; \
	fi

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

browser-test: browser env
	ADVLIB_REQUIRE_BOOK=1 $(PY) -m pytest tests/browser

# lint, unit tests and every chapter under nbval; then the book is built (executing every chapter
# again, as readers get it) and opened in Chromium.
test: data lint browser
	$(PY) -m pytest tests chapters --nbval-lax --nbval-current-env --ignore=tests/browser
	$(MAKE) book
	$(MAKE) browser-test

clean:
	rm -rf _build
