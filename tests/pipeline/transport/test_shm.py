"""Shared-memory slots: the producer's pool and the consumer's read-only views."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.transport.shm import SHM_DIR, ShmReader, SlotPool


def test_slot_pool_reuses_released_slots_and_grows_for_bigger_frames():
    pool = SlotPool("pipeline-test-pool", max_slots=2)
    try:
        a = pool.acquire(1000)
        b = pool.acquire(1000)
        assert a is not None and b is not None and a.name != b.name
        assert pool.acquire(10) is None  # both held
        a.refs = 0
        again = pool.acquire(500)
        assert again is a  # reused, no new segment
        b.refs = 0
        big = pool.acquire(1 << 20)
        assert big is not None and big.size >= 1 << 20 and big.name != b.name
        assert not (SHM_DIR / b.name).exists()  # the small one it replaced is unlinked
    finally:
        names = [s.name for s in pool.slots]
        pool.close()
    assert not any((SHM_DIR / n).exists() for n in names)


def test_reader_views_a_producer_slot_without_copy_and_read_only():
    pool = SlotPool("pipeline-test-reader", max_slots=1)
    reader = ShmReader()
    try:
        slot = pool.acquire(4 * 6)
        view = slot.view((2, 3), np.dtype(np.float32))
        view[:] = [[1, 2, 3], [4, 5, 6]]
        seen = reader.view(slot.name, (2, 3), np.dtype(np.float32))
        assert seen.tolist() == [[1, 2, 3], [4, 5, 6]]
        assert not seen.flags.writeable
        view[0, 0] = 42  # the consumer sees the producer's memory itself
        assert seen[0, 0] == 42
        with pytest.raises(ValueError, match="read-only"):
            seen[0, 0] = 1
    finally:
        del seen, view
        reader.close()
        pool.close()
