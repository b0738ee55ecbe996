"""Two sides of a team (xpnet.team), both in this process: the helper's side on a
thread, linked by pipes and memfd memory as a helper process would be (NumPy
host work only, so no backend fixture)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from xpnet import shm, team

pytestmark = pytest.mark.skipif(
    not hasattr(os, "memfd_create"), reason="a team's memory needs Linux (memfd_create)"
)


@pytest.fixture
def sides():
    """``(caller, helper)`` Links wired to each other, closed after the test."""
    down, up = os.pipe(), os.pipe()  # caller -> helper, helper -> caller
    streams = [
        os.fdopen(down[0], "rb"),
        os.fdopen(down[1], "wb"),
        os.fdopen(up[0], "rb"),
        os.fdopen(up[1], "wb", buffering=0),
    ]
    shared, own = shm.Memory.create("test-shared"), shm.Memory.create("test-own")
    loops = shm.Memory.create("test-loops")
    # each side maps the memory of its own: as a helper process, which maps the fds
    seen = [shm.Memory(m.fd, shm.FIRST_BYTES) for m in (shared, own, loops)]
    caller = team.Link(True, streams[2], streams[1], shared, seen[1], loops)
    helper = team.Link(False, streams[0], streams[3], own, seen[0], seen[2])
    yield caller, helper
    for stream in streams:
        stream.close()
    for memory in (shared, own, loops):
        os.close(memory.fd)


def _squares(done, side, pause=0.0):
    def compute(lo, hi):
        done.append((side, lo))
        time.sleep(pause)  # the other side claims meanwhile
        return np.arange(lo, hi, dtype=np.float64)[:, None] ** 2 * np.ones((1, 3))

    return compute


def _on_thread(function):
    result, error = [], []

    def run():
        try:
            result.append(function())
        except Exception as exc:  # noqa: BLE001  (asserted by the test)
            error.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result, error


def test_a_shared_loop_gives_both_sides_every_piece_from_each_end(sides):
    caller, helper = sides
    caller._headers()[:] = [0, team._UNCLAIMED]  # what start() sets up
    bounds = [(lo, min(lo + 3, 40)) for lo in range(0, 40, 3)]
    done = []
    thread, result, error = _on_thread(
        lambda: helper.pieces(bounds, _squares(done, "helper", 0.002))
    )
    mine = caller.pieces(bounds, _squares(done, "caller", 0.002))
    thread.join(10)
    assert not error and len(result) == 1
    expected = np.arange(40.0)[:, None] ** 2 * np.ones((1, 3))
    np.testing.assert_array_equal(mine, expected)
    np.testing.assert_array_equal(result[0], expected)  # the same array on both sides
    by = {side: sorted(lo for s, lo in done if s == side) for side in ("caller", "helper")}
    assert by["caller"] and by["helper"]  # both worked
    assert by["caller"][0] == 0 and by["helper"][-1] == bounds[-1][0]  # from the front, the back
    assert {lo for _, lo in done} == {lo for lo, _ in bounds}  # every piece
    assert len(done) <= len(bounds) + 1  # at most the piece both claimed at once, twice
    # the next loop's array lies after this one's, on both sides alike
    assert caller.output_end == helper.output_end > team._FIRST_OUTPUT


def test_objects_that_come_while_a_loop_ends_wait_for_receive(sides):
    caller, helper = sides
    caller._headers()[:] = [0, team._UNCLAIMED]
    bounds = [(0, 2), (2, 4)]

    def helper_side():
        helper.send({"planned": np.arange(5)})  # sent before the loop's end
        return helper.pieces(bounds, _squares([], "helper"))

    thread, _, error = _on_thread(helper_side)
    caller.pieces(bounds, _squares([], "caller"))
    thread.join(10)
    assert not error
    np.testing.assert_array_equal(caller.receive()["planned"], np.arange(5))


def test_a_helper_that_fails_leaves_the_caller_to_finish_alone(sides):
    caller, helper = sides
    caller._headers()[:] = [0, team._UNCLAIMED]
    bounds = [(lo, lo + 1) for lo in range(8)]

    def failing(lo, hi):
        raise RuntimeError("broken helper")

    def helper_side():  # as team.serve does when its function raises
        try:
            helper.pieces(bounds, failing)
        except RuntimeError as exc:
            shm.write_message(helper.writer, ("error", str(exc)))

    thread, _, _ = _on_thread(helper_side)
    time.sleep(0.05)  # the helper claims the last piece and fails first
    mine = caller.pieces(bounds, _squares([], "caller"))
    thread.join(10)
    np.testing.assert_array_equal(mine, np.arange(8.0)[:, None] ** 2 * np.ones((1, 3)))
    assert caller.broken
    with pytest.raises(team.TeamBroken):
        caller.receive()
    assert caller.pieces(bounds, _squares([], "caller")) is None  # alone from now on
    caller.finish()  # nothing awaited from a broken team
    assert caller.finished


def test_a_closed_pipe_breaks_the_team(sides):
    caller, helper = sides
    helper.writer.close()
    with pytest.raises(team.TeamBroken, match="pipe closed"):
        caller.receive()
    assert caller.broken


def test_loops_that_cannot_be_shared_are_left_to_each_side(sides):
    caller, _ = sides
    compute = _squares([], "caller")
    assert caller.pieces([(0, 5)], compute) is None  # one piece
    assert caller.pieces([(0, 2), (3, 5)], compute) is None  # not consecutive
    caller.loop = team.MAX_LOOPS
    assert caller.pieces([(0, 2), (2, 4)], compute) is None  # past the headers


def test_only_functions_of_xpnet_start_a_team(sides):
    caller, _ = sides
    with pytest.raises(ValueError, match="module-level function of xpnet"):
        caller.start(np.sum, ())
