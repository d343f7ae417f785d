# Every target sets up (or refreshes) .venv itself, so each works from a fresh clone. The venv
# gets exactly the versions in requirements.lock (the package itself without dependencies).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: train test test-isa test-lowest summary benchmark lock clean

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

# The float-comparing tests again, with XLA:CPU limited to an instruction set below this
# CPU's: a tolerance that holds only for one CPU's rounding fails here, not on a user's.
LOWER_ISA := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo AVX2 || \
    (grep -qw avx2 /proc/cpuinfo 2>/dev/null && echo SSE4_2))
ISA ?= $(LOWER_ISA)
test-isa: $(STAMP)  ## the float-comparing tests on another instruction set (ISA=SSE4_2|AVX|AVX2)
	@test -n "$(ISA)" || { echo "test-isa: no lower x86 instruction set than this CPU's"; exit 0; }
	XLA_FLAGS="$(XLA_FLAGS) --xla_cpu_max_isa=$(ISA)" $(VENV)/bin/python -m pytest -n 2 \
	    -m numerics tests $(ARGS)

# The lowest versions setup.cfg allows, in a venv of their own: a plain install (no
# TensorFlow), then with the extras that bring it, each followed by its smoke test.
LOWEST_VENV := .venv-lowest
SMOKE = $(LOWEST_VENV)/bin/python -m pytest --noconftest -p no:cacheprovider \
    tests/smoke_installed.py
test-lowest:  ## install the lowest versions setup.cfg allows and smoke-test them
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install -q --upgrade pip
	$(LOWEST_VENV)/bin/pip install -q -c requirements-lowest.lock -e '.[test]'
	$(SMOKE) -m "not extras" $(ARGS)
	$(LOWEST_VENV)/bin/pip install -q -c requirements-lowest.lock -e '.[test,tfrecord,export,stablehlo]'
	$(SMOKE) -m extras $(ARGS)

summary: $(STAMP)
	$(VENV)/bin/python -m mobilenet_jax.summary $(ARGS)

benchmark: $(STAMP)
	$(VENV)/bin/python -m mobilenet_jax.benchmark $(ARGS)

# pip-compile (pip's resolver) for the venv's Python and platform: Python 3.11 on Linux x86-64,
# as CI. (uv pip compile ignores upper bounds of Requires-Python and locked a release that
# 3.11 cannot install.)
# `make lock` moves every pin to the newest release setup.cfg's ranges allow; `make lock
# LOCK_UPGRADE=` only adds what a new dependency in setup.cfg needs and keeps the other pins.
# requirements-lowest.lock pins every lower bound of setup.cfg instead (`make test-lowest`).
LOCK_UPGRADE ?= --upgrade
# The lowest lock leaves out the onnx extra: jax2onnx needs a jax above jax's lower bound.
LOWEST_EXTRAS := --extra test --extra tfrecord --extra export --extra stablehlo
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(VENV)/bin/pip-compile --quiet \
    --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links
lock:  ## re-resolve requirements.lock (newest) and requirements-lowest.lock (lower bounds)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q pip-tools
	$(PIP_COMPILE) $(LOWEST_EXTRAS) --extra onnx $(LOCK_UPGRADE) \
	    --output-file requirements.lock setup.cfg
	sed -n 's/^ *\([A-Za-z0-9_.-]*\)>=\([0-9][^ ;,#]*\).*/\1==\2/p' setup.cfg \
	    | grep -v -e '^jax2onnx==' -e '^onnxruntime==' | sort -u > $(VENV)/lower-bounds.in
	$(PIP_COMPILE) $(LOWEST_EXTRAS) $(LOCK_UPGRADE) --output-file requirements-lowest.lock \
	    setup.cfg $(VENV)/lower-bounds.in

clean:
	rm -rf $(VENV) $(LOWEST_VENV) *.egg-info
