"""The call wakes an idle pusher through the FIFO in its spool: a byte that is there for the
pusher's next wait (no wake-up is lost, even one sent while the pusher was busy), and a call
with no pusher listening changes nothing."""

from __future__ import annotations

import os
import select

from bvh_ops.wal import pusher


def _awake(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_a_call_wakes_the_idle_pusher_and_nothing_without_one(tmp_path):
    d = str(tmp_path)
    pusher.wake(d)  # no pusher: no FIFO created, no error
    assert os.listdir(d) == []

    listen = pusher._listen(d)
    try:
        assert not _awake(listen)
        pusher.wake(d)
        pusher.wake(d)  # a second call before the pusher looked: still one wake-up
        assert _awake(listen)
        pusher._sleep(listen, 0)  # the pusher takes it
        assert not _awake(listen)
        pusher.request_stop(d, "someone")  # a stop request wakes it too
        assert _awake(listen)
    finally:
        os.close(listen)
    pusher.wake(d)  # the pusher has gone: the FIFO is left, nobody reads it, the call goes on


def test_a_wake_file_that_is_not_a_fifo_is_replaced(tmp_path):
    """A regular file in the FIFO's place would always read as "woken" (an idle pusher spinning
    on a core): the pusher puts a FIFO there."""
    (tmp_path / pusher.WAKE).write_bytes(b"left over")
    listen = pusher._listen(str(tmp_path))
    try:
        assert listen is not None and not _awake(listen)
        pusher.wake(str(tmp_path))
        assert _awake(listen)
    finally:
        os.close(listen)
