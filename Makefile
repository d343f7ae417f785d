# Every target sets up (or refreshes) .venv itself, so each works from a fresh clone.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: train test summary benchmark clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test,export]'
	touch $(STAMP)

train: $(STAMP)  ## train with the defaults (ARGS="--alpha 0.1 ..." to change them)
	$(VENV)/bin/python -m mobilenet_jax.train $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(VENV)/bin/python -m pytest -n 2 tests $(ARGS)

summary: $(STAMP)
	$(VENV)/bin/python -m mobilenet_jax.summary $(ARGS)

benchmark: $(STAMP)
	$(VENV)/bin/python -m mobilenet_jax.benchmark $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info
