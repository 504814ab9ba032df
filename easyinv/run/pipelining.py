"""Keep the device busy: decode the next batch while this one runs, and write results while the next one runs.

Two one-thread helpers around the runner's batch loop. Loading (JPEG/PNG decoding, resizing) and persisting (PNG
encoding, fsync'd record appends) are host work that would otherwise sit between two UNet-bound batches. Each uses a
single worker thread, so order is kept: batches arrive in dataset order, and a batch's PNGs are on disk before its
records (a killed run never holds a record whose PNG was never written).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["BackgroundWriter", "prefetch"]

T = TypeVar("T")
R = TypeVar("R")


def prefetch(load: Callable[[T], R], batches: Iterable[T], depth: int = 1) -> Iterator[R]:
    """``load(b)`` for every batch in order, with up to ``depth`` batches loaded ahead on a worker thread.

    An exception raised by ``load`` surfaces when its batch is reached, as if it had been called in the loop.
    """
    if depth < 1:
        yield from map(load, batches)
        return
    todo = iter(batches)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="easyinv-load") as pool:
        ahead: deque[Future[R]] = deque()
        for batch in todo:
            ahead.append(pool.submit(load, batch))
            if len(ahead) > depth:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


class BackgroundWriter:
    """Runs submitted jobs one at a time, in submission order, on a worker thread.

    At most ``max_pending`` jobs wait (the producer blocks beyond that, bounding memory). The first failure is
    raised in the producer at its next :meth:`submit` or at :meth:`drain`. Leaving the ``with`` block drains the
    queue even when the block raised, so every finished batch is persisted before an exception propagates.
    """

    def __init__(self, max_pending: int = 2):
        self.max_pending = max(1, int(max_pending))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easyinv-write")
        self._pending: deque[Future[Any]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._reap(block=len(self._pending) >= self.max_pending)
        self._pending.append(self._pool.submit(fn, *args))

    def _reap(self, block: bool) -> None:
        while self._pending and (block or self._pending[0].done()):
            self._pending.popleft().result()
            block = False

    def drain(self) -> None:
        """Wait for every submitted job; re-raise the first failure."""
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self.drain()
            else:  # persist what finished, but let the original exception propagate
                for future in list(self._pending):
                    future.exception()
                self._pending.clear()
        finally:
            self._pool.shutdown(wait=True)
