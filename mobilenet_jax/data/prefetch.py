"""The next batches made and sent to the devices while the current step runs."""
import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

In, Out = TypeVar("In"), TypeVar("Out")
_END = object()


def prefetch(items: Iterable[In], put: Callable[[In], Out], size: int = 2) -> Iterator[Out]:
    """`put(item)` for each item, in order, made ahead by a background thread: at most `size`
    waiting, one more in the making. For batches, the host's gather and the copy to the
    devices overlap the step in flight. An error in `items` or `put` is raised here, where its
    item would have come.
    Closing the iterator (or leaving a loop over it) stops the thread. `size` 0: no thread."""
    if size < 1:
        yield from map(put, items)
        return
    ready, stop = queue.Queue(maxsize=size), threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not offer((put(item), None)):
                    return
            offer((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            offer((_END, e))

    thread = threading.Thread(target=work, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value, error = ready.get()
            if value is _END:
                if error is not None:
                    raise error
                return
            yield value
    finally:
        stop.set()
        thread.join()
