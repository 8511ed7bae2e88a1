# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Everything is installed into .venv from the package's own metadata (pyproject.toml,
# package.json); nothing installed by hand counts.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# npm and jupyter-builder (the labextension build) must see the venv's tools.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo serve-demo test install install-test chromium lint typecheck pytest test-kserve bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# Editable install: builds the TypeScript with npm and links the labextension into the venv.
install: $(PY)
	$(PIP) install --quiet -e ".[lab]"
	$(VENV)/bin/jupyter labextension develop --overwrite . >/dev/null
	$(copy_nbextension)
	$(copy_voila_labextension)

install-test: $(PY)
	$(PIP) install --quiet -e ".[test]"
	$(VENV)/bin/jupyter labextension develop --overwrite . >/dev/null
	$(copy_nbextension)
	$(copy_voila_labextension)

# The classic Notebook / VS Code bundle, put where a wheel install puts it (pyproject's shared-data).
# Copied, not linked: the notebook server refuses (403) to serve an nbextension through a symlink
# that leaves its static directory. After changing js/, run `make install` (or copy) again.
define copy_nbextension
	rm -rf $(VENV)/share/jupyter/nbextensions/ee-model-widgets
	mkdir -p $(VENV)/share/jupyter/nbextensions $(VENV)/etc/jupyter/nbconfig/notebook.d
	cp -r ee_model_widgets/nbextension $(VENV)/share/jupyter/nbextensions/ee-model-widgets
	cp jupyter-config/nbconfig/notebook.d/ee-model-widgets.json $(VENV)/etc/jupyter/nbconfig/notebook.d/
endef

# Voila (`voila notebooks/quickstart.ipynb`) does not follow the link `labextension develop` makes
# (403 "... is not in root static directory"), so it gets a copy of its own, in Voila's own
# labextensions directory, looked up before the link (VoilaConfiguration.extra_labextensions_path
# in the venv's voila.json). JupyterLab keeps the link. Only for the `voila` command: Voila inside
# a Jupyter server (/voila/render) shares its file lookup cache with JupyterLab's labextension
# route, so there a second copy would make JupyterLab's route 403 whenever Voila asked first.
# A wheel install needs none of this. After changing js/, run `make install` again for Voila.
VOILA_LABEXT := $(abspath $(VENV))/share/jupyter/voila/labextensions
define copy_voila_labextension
	rm -rf $(VOILA_LABEXT)/ee-model-widgets
	mkdir -p $(VOILA_LABEXT) $(VENV)/etc/jupyter
	cp -r ee_model_widgets/labextension $(VOILA_LABEXT)/ee-model-widgets
	echo '{"Voila": {"VoilaConfiguration": {"extra_labextensions_path": ["$(VOILA_LABEXT)"]}}}' \
	    > $(VENV)/etc/jupyter/voila.json
endef

demo: install
	@$(MAKE) --no-print-directory serve-demo

# What `make demo` runs once installed; the browser tests start JupyterLab through this target,
# so they see exactly what a newcomer sees. The quickstart asks to run itself when opened
# (metadata "autorun"); our extension only does that for notebooks the user trusts, so trust it
# first. The URL the server prints opens the quickstart (default_url), not the Launcher.
# LAB_ARGS: extra options, e.g. LAB_ARGS=--no-browser.
serve-demo:
	$(VENV)/bin/jupyter trust notebooks/quickstart.ipynb
	$(VENV)/bin/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS) \
	    --LabApp.default_url=/lab/tree/quickstart.ipynb notebooks/quickstart.ipynb

# The browser tests drive the system's Chromium (a test tool's own browser download cannot
# work offline). As root on Debian we install it; otherwise we need one on PATH.
chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	    || command -v google-chrome >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
	    echo "The browser tests need Chromium: run 'sudo apt-get install -y chromium' (Debian/Ubuntu) or put chromium/chrome on PATH." >&2; \
	    exit 1; \
	fi

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-test
	npm run --silent typecheck

pytest: install-test chromium
	$(PY) -m pytest

# KServe's ModelServer and REST client against ours (tests/kserve): KServe pins much of the web
# stack, so it lives in a venv of its own.
KVENV := .venv-kserve
$(KVENV)/bin/python:
	$(PYTHON) -m venv $(KVENV)
	$(KVENV)/bin/python -m pip install --quiet --upgrade pip

test-kserve: $(KVENV)/bin/python
	$(KVENV)/bin/python -m pip install --quiet -e ".[kserve]"
	$(KVENV)/bin/python -m pytest tests/kserve -q -p no:cacheprovider

test: lint typecheck pytest test-kserve

bench: install-test chromium
	$(PIP) install --quiet -e ".[test,bench]"
	cp benchmarks/figures.json $(VENV)/figures-before-bench.json
	@for f in benchmarks/[!_]*.py; do [ $$f = benchmarks/report.py ] && continue; echo "== $$f"; $(PY) $$f || exit 1; done
	$(PY) benchmarks/report.py --write
	@echo "== this run against the runs recorded before it"
	$(PY) benchmarks/report.py --compare $(VENV)/figures-before-bench.json

clean:
	rm -rf $(VENV) $(KVENV) node_modules lib dist ee_model_widgets/labextension ee_model_widgets/nbextension
