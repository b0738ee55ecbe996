"""Shared memory and pipe messages (xpnet.shm): host only, so no backend fixture."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from xpnet import shm

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "memfd_create") and sys.platform == "linux"),
    reason="shared memory needs Linux (memfd_create)",
)


@pytest.fixture
def memory():
    created = shm.Memory.create("xpnet-test")
    yield created
    os.close(created.fd)


def test_an_object_comes_back_with_its_arrays_viewing_the_memory(memory):
    a, b = np.arange(10.0), np.ones((3, 4), dtype=np.float32)
    data, places, end = memory.put(([a, "name", 3], b))
    assert all(offset % 64 == 0 for offset, _ in places) and end <= memory.size
    (got_a, name, three), got_b = memory.get(data, places)
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(got_b, b)
    assert (name, three, got_b.dtype) == ("name", 3, np.float32)
    memory.put(([-a, "name", 3], b))  # the same places: the views see it
    np.testing.assert_array_equal(got_a, -a)
    kept = shm.copied([got_a, (got_b, "x")])
    memory.put(([a, "name", 3], b))
    np.testing.assert_array_equal(kept[0], -a)  # copied out: unchanged
    assert kept[1][1] == "x"


def test_a_kept_object_is_given_again_with_the_values_put_this_time(memory):
    weights = np.arange(6.0).reshape(2, 3)
    first = memory.get_kept(*memory.put((weights, [(0, 3)]))[:2])
    again = memory.get_kept(*memory.put((2 * weights, [(0, 3)]))[:2])
    assert again is first  # the same pickle and places: not unpickled again
    np.testing.assert_array_equal(again[0], 2 * weights)
    other = memory.get_kept(*memory.put((weights, [(0, 2)]))[:2])
    assert other is not first and other[1] == [(0, 2)]
    wider = memory.get_kept(*memory.put((np.ones((2, 4)), [(0, 2)]))[:2])
    assert wider is not other and wider[0].shape == (2, 4)


def test_a_kept_object_is_not_given_after_the_memory_grew(memory):
    small = np.ones(4)
    first = memory.get_kept(*memory.put((small,))[:2])
    memory.put((np.ones(shm.FIRST_BYTES // 8 + 1),))  # grows the memory
    again = memory.get_kept(*memory.put((3 * small,))[:2])
    assert again is not first
    np.testing.assert_array_equal(again[0], 3 * small)


def test_the_other_side_reads_a_grown_memory_after_remapping(memory):
    other = shm.Memory(memory.fd, shm.FIRST_BYTES)
    big = np.arange(shm.FIRST_BYTES // 8 * 3, dtype=np.float64)
    data, places, _ = memory.put((big,))
    assert memory.size > shm.FIRST_BYTES
    other.remap(memory.size)
    np.testing.assert_array_equal(other.get(data, places)[0], big)


def test_a_message_goes_through_a_pipe_and_a_short_one_raises():
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        shm.write_message(writer, ("ok", 3, b"\x00" * 100))
        assert shm.read_message(reader) == ("ok", 3, b"\x00" * 100)
        writer.write((50).to_bytes(8, "little") + b"short")
        writer.close()
        with pytest.raises(EOFError, match="ended"):
            shm.read_message(reader)
