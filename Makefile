# Every target sets up (or refreshes) .venv itself, so each works from a fresh clone. The venv
# gets exactly the versions in requirements.lock (the package itself without dependencies).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# What the lock is resolved for: the CI machine's Python and platform.
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

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

lock: $(STAMP)  ## re-resolve requirements.lock: the newest versions setup.cfg's ranges allow
	$(VENV)/bin/pip install -q uv
	$(VENV)/bin/uv pip compile setup.cfg --extra test --extra export $(LOCK_TARGET) \
	    --upgrade --quiet --custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf $(VENV) *.egg-info
