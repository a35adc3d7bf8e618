"""PeerProcess: a peer in its own process answers calls, reports its errors and deaths, and closes cleanly."""

from __future__ import annotations

import os

import pytest

from benchmarks.peer_process import PeerProcess

FACTORY = "_peer_helpers:make_counter"


@pytest.mark.timeout(120)
def test_calls_run_in_a_separate_process_that_keeps_state():
    with PeerProcess("counter", FACTORY, {"start": 5}) as peer:
        assert peer.ready_info["start"] == 5 and peer.ready_info["pid"] != os.getpid()
        assert [peer.call("epoch") for _ in range(3)] == [6, 7, 8]
    with pytest.raises(RuntimeError, match="'counter' is closed"):
        peer.call("epoch")
    peer.close()  # idempotent


@pytest.mark.timeout(120)
def test_errors_in_build_and_call_reach_the_parent_with_the_child_traceback():
    with pytest.raises(RuntimeError, match=r"'bad' failed during 'build'(.|\n)*fail_build=True"):
        PeerProcess("bad", FACTORY, {"fail_build": True})
    peer = PeerProcess("counter", FACTORY, {})
    with pytest.raises(RuntimeError, match=r"failed during 'boom'(.|\n)*KeyError: 'boom in the child'"):
        peer.call("boom")
    assert not peer._proc.is_alive()  # an error closes the peer


@pytest.mark.timeout(120)
def test_a_child_that_dies_is_reported_not_waited_on():
    peer = PeerProcess("counter", FACTORY, {}, timeout_s=60)
    with pytest.raises(RuntimeError, match=r"'counter': process ended during 'die' \(exit code 3\)"):
        peer.call("die")
