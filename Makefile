# chargepilot: the two commands the README promises, plus a few helpers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test venv bench clean

# make run: the demo ends by itself (~50 s) and prints the timeline page's path;
# options of tools/run_demo.py go in RUN_ARGS, e.g. make run RUN_ARGS="--step 3 --full"
run: $(STAMP)
	$(PY) tools/run_demo.py $(RUN_ARGS)

test: $(STAMP)
	$(PY) tools/test_all.py

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

bench: $(STAMP)
	$(PY) tools/bench composite

clean:
	rm -rf build dist
