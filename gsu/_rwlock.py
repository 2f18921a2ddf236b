"""``RWLock``: the readers-writer lock behind the index concurrency contract.

Any number of threads may hold the read side at once; the write side is exclusive.
Both sides are reentrant within one thread (a search that calls another search, an
``add`` that calls ``rebuild``, a read inside a write). A thread that holds only the
read side cannot take the write side (it would wait for itself): it gets a
``RuntimeError`` instead of a deadlock.

Fairness: a writer that waits keeps new readers out, so a steady stream of searches
cannot starve an ``add``; readers that waited through one write are let in when it
ends even if another writer is already waiting, so a stream of adds cannot starve the
searches either.

Cost: the uncontended read side is a few dictionary operations (the measured cost per
search is in the README's "Guarantees" section). Readers register in a dict keyed by
thread id and then look at the writer flag; a writer raises the flag and then waits
until no reader is registered. Under the GIL each of these steps is atomic and they
are seen in program order, so either the reader sees the flag (and steps back to wait
under the mutex) or the writer sees the reader (and waits for it): never neither. On a
free-threaded interpreter (no GIL) every step is taken under the mutex instead.
"""

from __future__ import annotations

import sys
import threading
from _thread import get_ident
from typing import Any

__all__ = ["RWLock"]

_GIL = bool(getattr(sys, "_is_gil_enabled", lambda: True)())


class RWLock:
    """Readers-writer lock, reentrant per thread, fair between readers and writers."""

    __slots__ = ("_held", "_flag", "_active", "_writer_tid", "_write_depth", "_reads_in_write",
                 "_writers", "_cond", "_generation")

    def __init__(self) -> None:
        self._held: dict[int, int] = {}  # reader thread id -> read depth (outermost registrations)
        self._flag = False  # a writer wants the lock or holds it
        self._active = False  # a writer holds it
        self._writer_tid = 0
        self._write_depth = 0
        self._reads_in_write = 0  # reads nested inside the writer thread's write
        self._writers = threading.Lock()  # one writer at a time
        self._cond = threading.Condition(threading.Lock())
        self._generation = 0  # completed writes

    # -- read side -----------------------------------------------------------
    def acquire_read(self) -> None:
        tid = get_ident()
        held = self._held
        c = held.get(tid)
        if c:  # nested in this thread's own read
            held[tid] = c + 1
            return
        if self._writer_tid == tid:  # a read inside this thread's write
            self._reads_in_write += 1
            return
        if not _GIL:
            self._read_slow(tid, registered=False)
            return
        held[tid] = 1
        if self._flag:  # a writer wants in: step back and wait under the mutex
            self._read_slow(tid, registered=True)

    def _read_slow(self, tid: int, *, registered: bool) -> None:
        with self._cond:
            if registered:
                del self._held[tid]
                self._cond.notify_all()  # the writer may be waiting for the registered readers
            gen = self._generation
            while self._active or (self._flag and self._generation == gen):
                self._cond.wait()
            self._held[tid] = 1  # a writer that raises its flag now will wait for us

    def release_read(self) -> None:
        tid = get_ident()
        held = self._held
        c = held.get(tid)
        if c is None:
            if self._writer_tid == tid and self._reads_in_write:
                self._reads_in_write -= 1
                return
            raise RuntimeError("RWLock.release_read: this thread does not hold the read side")
        if c > 1:
            held[tid] = c - 1
            return
        if not _GIL:
            with self._cond:
                del held[tid]
                self._cond.notify_all()
            return
        del held[tid]
        if self._flag:
            self._notify()

    def _notify(self) -> None:
        """Wake the waiters (a writer waiting for the registered readers to leave)."""
        with self._cond:
            self._cond.notify_all()

    # -- write side ----------------------------------------------------------
    def acquire_write(self) -> None:
        tid = get_ident()
        if self._writer_tid == tid:
            self._write_depth += 1
            return
        if self._held.get(tid):
            raise RuntimeError("RWLock: a thread that is searching cannot modify the same index (it would wait for itself)")
        self._writers.acquire()
        try:
            with self._cond:
                self._flag = True
                while self._held:
                    self._cond.wait()
                self._active = True
        except BaseException:
            with self._cond:
                self._flag = False
                self._cond.notify_all()
            self._writers.release()
            raise
        self._writer_tid = tid
        self._write_depth = 1

    def release_write(self) -> None:
        if self._writer_tid != get_ident():
            raise RuntimeError("RWLock.release_write: this thread does not hold the write side")
        self._write_depth -= 1
        if self._write_depth:
            return
        self._writer_tid = 0
        with self._cond:
            self._active = False
            self._flag = False
            self._generation += 1
            self._cond.notify_all()
        self._writers.release()

    # -- context managers ----------------------------------------------------
    def read(self) -> "_Side":
        """``with lock.read(): ...``"""
        return _Side(self.acquire_read, self.release_read)

    def write(self) -> "_Side":
        """``with lock.write(): ...``"""
        return _Side(self.acquire_write, self.release_write)

    def __repr__(self) -> str:
        return f"RWLock(readers={len(self._held)}, writing={self._active})"


class _Side:
    __slots__ = ("_enter", "_exit")

    def __init__(self, enter: Any, exit_: Any) -> None:
        self._enter, self._exit = enter, exit_

    def __enter__(self) -> None:
        self._enter()

    def __exit__(self, *exc: Any) -> None:
        self._exit()
