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
- a run is alive while its supervisor holds an ``flock`` on ``<prefix>.lock`` beside its
  segments (:class:`RunLock`): the kernel drops the lock when the holder dies, however it
  dies. The pid in the name is not a test of life: a run in another PID namespace that
  shares /dev/shm (containers sharing it) has a pid that means nothing here, or another
  process's. Only segments without a lock file (left by a version without locks) fall back
  to the pid;
- a consumer never unmaps a segment while an array may still view it: mappings are dropped
  by reference only, and ``mmap`` refuses to unmap while a view exists;
- new slots are pre-faulted, so the first frame does not pay ~20 ms of page faults at 1080p.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import mmap
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.errors import TransportError

__all__ = [
    "SHM_DIR",
    "RunLock",
    "ShmReader",
    "Slot",
    "SlotPool",
    "lock_is_held",
    "remove_run_segments",
    "run_is_alive",
    "sweep_stale",
]

SHM_DIR = (
    Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir()) / "pipeline-shm"
)
PREFIX = "pipeline-"
_PAGE = mmap.PAGESIZE
_NAME = re.compile(r"^pipeline-(\d+)-")
_RUN = re.compile(r"^(pipeline-\d+-[0-9a-f]+)")  # a run's prefix: pid and run id
LOCK_SUFFIX = ".lock"


class RunLock:
    """An exclusive ``flock`` on ``path`` held for a run's life: the run is alive while held.

    Raises:
        OSError: the lock file cannot be created.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created under a name no sweep looks at, locked, then renamed: the lock file never
        # exists unlocked, so no sweep can take a starting run for a dead one.
        hidden = path.with_name(f".{path.name}.{os.getpid()}")
        self._fd = os.open(hidden, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.rename(hidden, path)
        except OSError:
            os.close(self._fd)
            with contextlib.suppress(OSError):
                hidden.unlink()
            raise

    def release(self, *, remove: bool = True) -> None:
        """Remove the lock file (while still holding it), then let go."""
        if self._fd < 0:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)
        self._fd = -1


def lock_is_held(path: Path) -> bool | None:
    """Whether some process holds ``path``'s lock (a live run); None when there is no file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return True  # cannot tell: leave it alone
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def reserve(fd: int, size: int) -> None:
    """Give the file ``size`` bytes that exist now (``posix_fallocate``), not on first touch.

    A sparse segment (``ftruncate`` alone) on a full /dev/shm is a SIGBUS at the first write
    of a frame: the process dies with no word. Reserved up front, a full /dev/shm is an
    ``OSError`` here, which the caller turns into a message.
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        os.ftruncate(fd, size)  # a file system without fallocate: as before


def no_room_message(size: int, exc: OSError) -> str:
    """Why a segment could not be made: the bytes needed, those free, and what to do."""
    try:
        usage = shutil.disk_usage(SHM_DIR)
        room = f"{usage.free} bytes free of {usage.total}"
    except OSError:
        room = "free space unknown"
    return (
        f"cannot reserve {size} bytes of shared memory in {SHM_DIR} ({room}): "
        f"{exc.strerror or exc}; give it more room (Docker: --shm-size=1g), or make frames "
        "smaller or queues shorter"
    )


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
            reserve(fd, size)
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise TransportError(no_room_message(size, exc)) from exc
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


def run_is_alive(lock: Path, pid: int) -> bool:
    """Whether the run whose lock file is ``lock`` still holds it.

    A run without a lock file (left by a version without locks) is judged by its ``pid``.
    """
    held = lock_is_held(lock)
    return _pid_alive(pid) if held is None else held


def sweep_stale() -> list[str]:
    """Remove the segments (and lock files) of runs that no longer hold their lock."""
    removed: list[str] = []
    if not SHM_DIR.is_dir():
        return removed
    verdicts: dict[str, bool] = {}
    for path in sorted(SHM_DIR.iterdir(), key=lambda p: p.name.endswith(LOCK_SUFFIX)):
        run, named = _RUN.match(path.name), _NAME.match(path.name)
        if named is None:
            continue
        prefix = run.group(1) if run is not None else path.name
        if prefix not in verdicts:
            verdicts[prefix] = run_is_alive(SHM_DIR / (prefix + LOCK_SUFFIX), int(named.group(1)))
        if not verdicts[prefix]:
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
