"""Prefetching: the same items in the same order, made ahead by a thread that ends with the
loop, and errors raised where their item would have come."""
import threading
import time

import pytest

from mobilenet_jax.data.prefetch import prefetch


def threads():
    return sum(t.name == "prefetch" for t in threading.enumerate())


@pytest.mark.parametrize("size", [0, 1, 2, 5])
def test_every_item_in_order(size):
    assert list(prefetch(range(20), lambda x: x * x, size)) == [x * x for x in range(20)]
    assert threads() == 0


def test_items_are_made_ahead_while_the_consumer_works():
    made = []
    items = prefetch(range(10), lambda x: made.append(x) or x, size=2)
    try:
        assert next(items) == 0
        deadline = time.monotonic() + 5
        while len(made) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert made == [0, 1, 2, 3]  # 0 taken, 1 and 2 queued, 3 waiting for room; no more
    finally:
        items.close()
    assert threads() == 0


def test_an_error_comes_where_its_item_would_have():
    def items():
        yield from (1, 2)
        raise ValueError("item 3 is unreadable")
    got = []
    with pytest.raises(ValueError, match="item 3"):
        for x in prefetch(items(), lambda x: x, size=2):
            got.append(x)
    assert got == [1, 2] and threads() == 0


def test_leaving_the_loop_early_stops_the_thread():
    for x in prefetch(iter(range(10 ** 9)), lambda x: x, size=3):
        if x == 5:
            break
    deadline = time.monotonic() + 5
    while threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads() == 0
