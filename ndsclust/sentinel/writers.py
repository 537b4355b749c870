"""The loop's writer threads: a small pool, each thread with its own connection to the
write provider, so a slow write never holds the loop and writes of different
applications go out side by side (the executor's groups, the rejoin's barrier)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ndsclust.ldapstore.store import Store


class Writers:
    """``pool`` runs the writes; ``store()`` is the calling thread's connection."""

    def __init__(self, size: int, connect: Callable[[], Store]) -> None:
        self._connect = connect
        self._stores: list[Store] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sentinel-writer")

    def store(self) -> Store:
        """This thread's connection to the write provider (one per thread, made at first use)."""
        store: Store | None = getattr(self._local, "store", None)
        if store is None:
            store = self._connect()
            self._local.store = store
            with self._lock:
                self._stores.append(store)
        return store

    def close(self) -> None:
        """Wait for the writes under way, then close every connection."""
        self.pool.shutdown(wait=True)
        with self._lock:
            for store in self._stores:
                store.close()
