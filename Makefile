# Set-up and entry points. `make app` serves the explorer, `make test` runs the whole suite.
# Each installs whatever is missing first: the virtual environment (.venv), the full datasets (data/),
# and for the browser tests Debian's chromium.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# where `make app` listens: this machine only by default; `make app ADDRESS=0.0.0.0` serves the network
ADDRESS ?= 127.0.0.1

.PHONY: app test data browser bench clean

# The project itself is installed editable last (`import geodesic` from any folder, the `geodesic` command in
# .venv/bin), with --no-deps: its dependencies are the ones requirements.txt has just installed, so pip does not
# resolve pyproject.toml's copy of that list a second time. That step could only look at the indexes again and,
# were the two lists ever to disagree, replace the torch 2.14.1 build from local disk with another one.
$(VENV)/.installed: requirements.txt requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -rf geodesic_explorer.egg-info  # setuptools' build step leaves it here; the installed metadata is in .venv
	touch $@

data: $(VENV)/.installed
	$(PY) -m geodesic fetch-data

browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

app: $(VENV)/.installed data
	$(VENV)/bin/streamlit run app/main.py --server.port $(PORT) --server.address $(ADDRESS) --server.headless true

test: $(VENV)/.installed data browser
	$(PY) -m pytest -q

bench: $(VENV)/.installed data
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) data runs
