"""Tracking calls off the caller's path: one daemon thread per process that runs them in
order, so a slow or silent MLflow server never stalls a sweep's loop or a trial's steps.

:meth:`Background.drain` waits for the queue at the end (of a trial, of a sweep) for a
bounded time. For a remote store (a tracking server, a database across the network) it gives
up early when the call in flight has been stuck longer than a few seconds (a server that
accepts connections and never answers), sooner when no call of this process has ever come
back (nothing suggests the server is merely slow). A local store (a SQLite file, a folder) is
never judged silent that way: it cannot hang like a server, it is only busy (another writer,
a first call creating its tables), so the wait is bounded by the timeout alone. What is left
is completed by the sweep's end (and ``ropenope resume``, ``ropenope sync``) from the study,
the source of truth. The thread is a daemon, so a hung HTTP call never keeps a process from
exiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("ropenope.tracking")

# A call running longer than this is "stuck": the end-of-run drain stops waiting for it.
STUCK_AFTER_S = 5.0
# The same while no call of this process has come back yet: a server that has never
# answered is not known to be slow, and a healthy one answers a first call well within
# this (a trial's first call opens its run: a handful of small requests).
FIRST_ANSWER_STUCK_AFTER_S = 2.0


class Background:
    """A FIFO of tracking calls run by one daemon thread (started on first use).

    ``remote``: whether the calls go to a remote store, which may be silent (see the module
    docstring); False turns :attr:`stuck` off. Not picklable state: a copy sent to another
    process starts its own thread there."""

    def __init__(self, name: str = "ropenope-tracking", *, remote: bool = True) -> None:
        self.name = name
        self.remote = remote
        self._queue: queue.Queue[tuple[Callable[[], Any], Future] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy_since: float | None = None  # when the call in flight started
        self._came_back = False  # whether any call has returned (or raised) yet

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "remote": self.remote}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], remote=state.get("remote", True))

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Queue ``fn``; its result (or exception) arrives in the returned future."""
        future: Future = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put((fn, future))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future = item
            if not future.set_running_or_notify_cancel():
                continue
            self._busy_since = time.monotonic()
            try:
                future.set_result(fn())
            except BaseException as err:  # delivered to whoever waits on the future
                future.set_exception(err)
            finally:
                self._came_back = True
                self._busy_since = None
                self._queue.task_done()

    @property
    def stuck(self) -> bool:
        """Whether the call in flight to a remote store has run longer than
        :data:`STUCK_AFTER_S` (or :data:`FIRST_ANSWER_STUCK_AFTER_S` while no call has come
        back); never for a local store."""
        if not self.remote:
            return False
        since = self._busy_since
        limit = STUCK_AFTER_S if self._came_back else FIRST_ANSWER_STUCK_AFTER_S
        return since is not None and time.monotonic() - since > limit

    @property
    def pending(self) -> int:
        return self._queue.unfinished_tasks

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued call ran, at most ``timeout_s``, and no longer once the
        call in flight is stuck. Returns whether the queue is empty."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if self.stuck or time.monotonic() >= deadline:
                log.warning(
                    "%d tracking calls not done (the tracking %s); "
                    "`ropenope sync STUDY` completes the runs later",
                    self._queue.unfinished_tasks,
                    "server does not answer" if self.stuck else "store is busy",
                )
                return False
            time.sleep(0.05)
        return True

    def wait(self, future: Future, timeout_s: float) -> Any:
        """The future's result within ``timeout_s`` (sooner None when the queue is stuck);
        its exception is raised."""
        deadline = time.monotonic() + timeout_s
        while not future.done():
            if self.stuck or time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        return future.result()
