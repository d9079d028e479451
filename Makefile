# chargepilot: the two commands the README promises, plus a few helpers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test venv bench twin clean

run: $(STAMP)
	$(PY) tools/run_demo.py

test: $(STAMP)
	$(PY) tools/test_all.py

venv: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

# The board twin (32-bit, agent frozen): build/twin/micropython. `make test`
# builds it too; it installs gcc-multilib with apt-get when missing and root.
twin: $(STAMP)
	$(PY) tools/twin.py

bench: $(STAMP)
	$(PY) tools/bench composite

clean:
	rm -rf build dist
