"""A pytest plugin that sums JAX's duration events (tracing, lowering, XLA compiles, orbax
reads and writes) per test, in the test processes themselves (not in processes they start):

    PYTHONPATH=experiments/suite_time python -m pytest -n 2 tests -p account_time
    python experiments/suite_time/account_time.py .    # the totals

Each test process appends one JSON line per test (its fixtures' set-up included where they
run after this one's) to $ACCOUNT_DIR (default .) / account_<xdist worker>.jsonl.
"""
import collections
import glob
import json
import os
import sys
import time

import pytest

EVENTS = collections.defaultdict(float)


def _listen(event, duration, **kw):
    EVENTS[event] += duration
    if "fun_name" in kw and event.endswith(("backend_compile_duration", "jaxpr_trace_duration")):
        EVENTS[f"{event.rsplit('/', 1)[-1]}:{kw['fun_name']}"] += duration


def pytest_configure(config):
    import jax.monitoring
    jax.monitoring.register_event_duration_secs_listener(_listen)


@pytest.fixture(autouse=True)
def _account(request):
    before, start = dict(EVENTS), time.time()
    yield
    row = {"test": request.node.nodeid, "wall": round(time.time() - start, 2)}
    row.update({k: round(v - before.get(k, 0.0), 3) for k, v in EVENTS.items()
                if v - before.get(k, 0.0) > 0.001})
    path = os.path.join(os.environ.get("ACCOUNT_DIR", "."),
                        f"account_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    rows = [json.loads(line) for path in glob.glob(os.path.join(sys.argv[1], "account_*.jsonl"))
            for line in open(path)]
    totals, counts = collections.Counter(), collections.Counter()
    for row in rows:
        for key, value in row.items():
            if key != "test":
                totals[key] += value
                counts[key] += 1
    for key, value in totals.most_common(40):
        print(f"{value:8.1f} s  {counts[key]:4d} tests  {key}")
