# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install, find or install a Chromium, run the demo
#   make test   - the same set-up, then the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev,dask,review

.PHONY: demo test setup chromium bench screenshots clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 'setuptools>=68' wheel  # the example plugin's tests build it without isolation
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP) chromium

chromium: $(STAMP)
	PY=$(PY) bash scripts/ensure-chromium.sh

demo: setup
	$(VENV)/bin/selfiescope demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

screenshots: setup  # refresh the pictures docs/review.md shows
	SELFIESCOPE_SCREENSHOTS=1 $(PY) -m pytest -q -p no:cacheprovider tests/test_review_browser.py

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) data models demo-output *.egg-info
