# The course's two commands: `make book` renders the HTML book, `make test` runs every test.
# Both create an isolated environment (.venv), install the requirements and fetch the data first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Executed notebooks render sliders as self-contained HTML, even when make runs inside a Jupyter server.
export ADVLIB_SLIDER := static

.PHONY: env data browser mathjax book render test unit notebooks browser-test lint clean

env: $(STAMP)

$(STAMP): requirements.txt requirements-peers.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-peers.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# MathJax 3 from npm's registry, copied into the built book (_static/mathjax), so that its formulas render
# with no network; _config.yml's mathjax_path points at it.
MATHJAX := .venv/mathjax/mathjax/es5/tex-mml-chtml.js
mathjax: $(MATHJAX)

$(MATHJAX):
	@command -v npm >/dev/null || { echo "mathjax: the book serves MathJax itself and installs it with npm;" \
	  "install Node.js and npm (Debian: apt-get install npm)"; exit 1; }
	rm -rf .venv/mathjax
	npm install --silent --no-save --no-audit --no-fund --prefix .venv/mathjax/npm mathjax@3
	mkdir -p .venv/mathjax/mathjax
	cp -r .venv/mathjax/npm/node_modules/mathjax/es5 .venv/mathjax/mathjax/
	rm -rf .venv/mathjax/npm

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

# A book built on its own executes every chapter afresh: its cache of executed chapters is emptied first.
book: data
	rm -rf _build/.jupyter_cache
	$(MAKE) render

# Render the book; chapters found in _build/.jupyter_cache (by the hash of their code) are not run again.
render: env mathjax
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going
	@echo
	@echo "The book is in $(CURDIR)/_build/html/index.html"

lint: env
	$(VENV)/bin/ruff check .

unit: data
	$(PY) -m pytest tests

notebooks: data
	$(PY) -m pytest --nbval-lax --nbval-current-env chapters

# Two Chromiums, one per core (pytest-xdist), each taking whole pages (--dist loadgroup, tests/browser/conftest.py)
# so that a page loads once for all its tests: 122 s on the 2-core VM, against 215 s loading it for every test.
browser-test: browser env
	ADVLIB_REQUIRE_BOOK=1 $(PY) -m pytest -n 2 --dist loadgroup tests/browser

# lint; every chapter under nbval and the unit tests, on both cores (one thread each, the longest chapters
# first: chapters/durations.json); each chapter runs once: chapters/conftest.py hands its outputs to the
# book's cache, the book is rendered from them and opened in Chromium.
test: data lint browser
	rm -rf _build/.jupyter_cache
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder \
	  chapters tests --nbval-lax --nbval-current-env --ignore=tests/browser
	$(MAKE) render
	$(MAKE) browser-test

clean:
	rm -rf _build
