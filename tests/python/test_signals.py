"""SIGTERM and SIGINT make a Python worker leave the job and exit with
128+signal, as ps_worker does: sync rounds stop waiting for it at once."""

import os
import signal
import sys

import pytest

from conftest import server_status, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


def start_worker(spawn, servers, name, worker_id=0, num_workers=1):
    return spawn(name, [sys.executable, "-u",
                        os.path.join(HERE, "looping_worker.py"),
                        ",".join(servers.addresses), str(worker_id),
                        str(num_workers)])


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_leaves_the_job_and_exits_128_plus_signal(
        servers, spawn, number):
    # A lease far longer than the test: only Leave can free the worker.
    servers.start(2, "--mode=async", "--lease_timeout=600s")
    worker = start_worker(spawn, servers, "worker")
    wait_for(lambda: all(server_status(a).pushes_applied >= 5
                         for a in servers.addresses), 60, "pushes")
    worker.signal(number)
    assert worker.wait(30) == 128 + number, worker.log()
    for address in servers.addresses:
        answer = server_status(address)
        assert answer.live_workers == 0, answer
        [me] = answer.workers
        # Stopped, not finished: a restart resumes it.
        assert not me.finished
    assert "leaving the job" in worker.log()
