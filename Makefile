# Every target sets up (or refreshes) .venv itself, so each works from a fresh clone. The venv
# gets exactly the versions in requirements.lock (the package itself without dependencies).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: train test summary benchmark lock clean

$(STAMP): requirements.lock setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

train: $(STAMP)  ## train with the defaults (ARGS="--alpha 0.1 ..." to change them)
	$(VENV)/bin/python -m mobilenet_jax.train $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(VENV)/bin/python -m pytest -n 2 tests $(ARGS)

summary: $(STAMP)
	$(VENV)/bin/python -m mobilenet_jax.summary $(ARGS)

benchmark: $(STAMP)
	$(VENV)/bin/python -m mobilenet_jax.benchmark $(ARGS)

# pip-compile (pip's resolver) for the venv's Python and platform: Python 3.11 on Linux x86-64,
# as CI. (uv pip compile ignores upper bounds of Requires-Python and locked a release that
# 3.11 cannot install.)
# `make lock` moves every pin to the newest release setup.cfg's ranges allow; `make lock
# LOCK_UPGRADE=` only adds what a new dependency in setup.cfg needs and keeps the other pins.
LOCK_UPGRADE ?= --upgrade
lock:  ## re-resolve requirements.lock: the newest versions setup.cfg's ranges allow
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q pip-tools
	CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet $(LOCK_UPGRADE) --extra test \
	    --extra export --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
	    --output-file requirements.lock setup.cfg

clean:
	rm -rf $(VENV) *.egg-info
