# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv if missing, installs, runs the main job on the synthetic default
#   make test   creates .venv if missing, installs, runs every test
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO ?= full
PYTEST_ARGS ?=

.PHONY: install test demo clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# pytest's exit code 5 (no test collected) is a failure, not a pass.
test: $(STAMP)
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: $(STAMP)
	$(PY) scripts/demo.py --preset $(DEMO)

clean-demo:
	rm -rf runs/demo runs/demo-smoke
