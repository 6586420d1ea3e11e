# Set-up and entry points. `make app` serves the explorer, `make test` runs the whole suite.
# Each installs whatever is missing first: the virtual environment (.venv), the full datasets (data/),
# and for the browser tests Debian's chromium.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501

.PHONY: app test data browser bench clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	touch $@

data: $(VENV)/.installed
	$(PY) -m geodesic fetch-data

browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi; }

app: $(VENV)/.installed data
	$(VENV)/bin/streamlit run app/main.py --server.port $(PORT) --server.headless true

test: $(VENV)/.installed data browser
	$(PY) -m pytest -q

bench: $(VENV)/.installed data
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) data runs
