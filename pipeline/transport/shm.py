"""Shared-memory slot pools: where frames live between processes on one host.

Each output port owns a ``SlotPool``. A slot is one POSIX shared-memory segment (a file in
``/dev/shm``), mapped once by the producer and once by each consumer, and reused: the
producer fills a slot (or a node writes straight into ``port.allocate(...)``), sends a small
descriptor naming the segment, and the consumers build numpy views on their mapping with no
copy. A slot is reused only when every consumer released it.

Segments are plain files opened with ``os.open`` + ``mmap``, not
``multiprocessing.shared_memory``: its resource tracker unlinks segments that a consumer
attached to when that consumer exits (Python <= 3.12), and warns about "leaks" that are not.
Ownership here is explicit instead:

- names are ``pipeline-<supervisor pid>-<run id>-...``; the producer unlinks its segments when
  it closes, the supervisor removes every segment of its run when the graph stops (so a
  producer killed with SIGKILL leaks nothing), and ``sweep_stale`` removes the segments of a
  run whose supervisor is gone (the whole process group was killed) at the next start;
- a consumer never unmaps a segment while an array may still view it: mappings are dropped
  by reference only, and ``mmap`` refuses to unmap while a view exists;
- new slots are pre-faulted, so the first frame does not pay ~20 ms of page faults at 1080p.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import TransportError

__all__ = ["SHM_DIR", "ShmReader", "Slot", "SlotPool", "remove_run_segments", "sweep_stale"]

SHM_DIR = (
    Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()) / "pipeline-shm"
)
PREFIX = "pipeline-"
_PAGE = mmap.PAGESIZE
_NAME = re.compile(r"^pipeline-(\d+)-")


class Slot:
    """One shared-memory segment of a pool, with its consumer reference count."""

    __slots__ = ("address", "array", "index", "mm", "name", "refs", "size")

    def __init__(self, index: int, name: str, size: int) -> None:
        self.index = index
        self.name = name
        self.size = size
        path = SHM_DIR / name
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise TransportError(
                f"cannot create a {size}-byte shared-memory segment in {SHM_DIR}: {exc} "
                "(is /dev/shm full? Docker's default is 64 MiB: run with --shm-size=512m)"
            ) from exc
        os.close(fd)
        self.array = np.frombuffer(self.mm, dtype=np.uint8)
        self.array.fill(0)  # pre-fault every page now, not on the first frame
        self.address: int = self.array.__array_interface__["data"][0]
        self.refs = 0

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = math.prod(shape)
        return self.array[: count * dtype.itemsize].view(dtype).reshape(shape)

    def contains(self, arr: np.ndarray) -> bool:
        start: int = arr.__array_interface__["data"][0]
        return self.address <= start < self.address + self.size

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (SHM_DIR / self.name).unlink()


class SlotPool:
    """The producer side: slots of one output port, grown on demand up to ``max_slots``.

    ``acquire(nbytes)`` returns a free slot at least that large; a free slot that is too small
    is replaced by a bigger one (a new name, so consumers never mistake it for the old one).
    """

    def __init__(self, prefix: str, max_slots: int) -> None:
        self.prefix = prefix
        self.max_slots = max_slots
        self.slots: list[Slot] = []
        self._generation = 0
        SHM_DIR.mkdir(parents=True, exist_ok=True)

    def _new(self, index: int, nbytes: int) -> Slot:
        self._generation += 1
        size = max(_PAGE, -(-nbytes // _PAGE) * _PAGE)
        return Slot(index, f"{self.prefix}-{index}-{self._generation}", size)

    def acquire(self, nbytes: int) -> Slot | None:
        """A free slot of at least ``nbytes``, or None when every slot is in use."""
        free_small: Slot | None = None
        for slot in self.slots:
            if slot.refs == 0:
                if slot.size >= nbytes:
                    slot.refs = 1
                    return slot
                free_small = free_small or slot
        if len(self.slots) < self.max_slots:
            slot = self._new(len(self.slots), nbytes)
            self.slots.append(slot)
        elif free_small is not None:
            slot = self._new(free_small.index, nbytes)
            free_small.unlink()
            self.slots[free_small.index] = slot
        else:
            return None
        slot.refs = 1
        return slot

    def close(self) -> None:
        """Unlink every segment. Mappings go when the last array viewing them goes."""
        for slot in self.slots:
            slot.unlink()
        self.slots.clear()


class ShmReader:
    """The consumer side: read-only mappings of producers' segments, cached by name."""

    def __init__(self) -> None:
        self._maps: dict[str, tuple[mmap.mmap, np.ndarray]] = {}
        self._latest: dict[str, str] = {}  # slot key (name without generation) -> name

    def view(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A read-only array on segment ``name`` (mapped on first use)."""
        entry = self._maps.get(name)
        if entry is None:
            entry = self._map(name)
        flat = entry[1]
        count = math.prod(shape)
        return flat[: count * dtype.itemsize].view(dtype).reshape(shape)

    def _map(self, name: str) -> tuple[mmap.mmap, np.ndarray]:
        try:
            fd = os.open(SHM_DIR / name, os.O_RDONLY)
        except FileNotFoundError:
            raise TransportError(
                f"shared-memory segment {name!r} is gone (its producer exited)"
            ) from None
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        flat = np.frombuffer(mm, dtype=np.uint8)
        key = name.rsplit("-", 1)[0]
        old = self._latest.get(key)
        if old is not None and old != name:
            # The producer replaced this slot with a bigger one. Drop our reference to the old
            # mapping; it is unmapped when the last array on it is collected.
            self._maps.pop(old, None)
        self._latest[key] = name
        self._maps[name] = (mm, flat)
        return mm, flat

    def close(self) -> None:
        self._maps.clear()
        self._latest.clear()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Remove segments (and run folders) left by runs whose supervisor no longer exists."""
    removed = []
    if SHM_DIR.is_dir():
        for path in SHM_DIR.iterdir():
            m = _NAME.match(path.name)
            if m and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path.name)
    return removed


def remove_run_segments(run_prefix: str) -> list[str]:
    """Remove every segment whose name starts with ``run_prefix``."""
    removed = []
    if SHM_DIR.is_dir():
        for path in SHM_DIR.glob(run_prefix + "*"):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path.name)
    return removed
