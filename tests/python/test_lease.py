"""A Python worker paused past its lease (SIGSTOP) is dropped by the
servers, and registers again when it resumes: the server's
REGISTRATION_REQUIRED detail, not the error text, tells it to."""

import signal

from conftest import server_status, wait_for
from test_signals import start_worker


def test_worker_paused_past_its_lease_registers_again_and_trains_on(
        servers, spawn):
    servers.start(2, "--mode=async", "--lease_timeout=1s")
    worker = start_worker(spawn, servers, "worker")
    wait_for(lambda: all(server_status(a).pushes_applied >= 5
                         for a in servers.addresses), 60, "pushes")
    worker.signal(signal.SIGSTOP)
    wait_for(lambda: all(server_status(a).leases_expired >= 1 and
                         server_status(a).live_workers == 0
                         for a in servers.addresses), 30,
             "the servers to expire the paused worker's lease")
    pushed = [server_status(a).pushes_applied for a in servers.addresses]
    worker.signal(signal.SIGCONT)

    def registered_again_and_pushing():
        answers = [server_status(a) for a in servers.addresses]
        return all(s.live_workers == 1 and s.workers[0].registrations >= 2
                   and s.pushes_applied > before + 5
                   for s, before in zip(answers, pushed))
    wait_for(registered_again_and_pushing, 60,
             "the worker to register again and push")
    assert worker.popen.poll() is None, worker.log()
    assert "registering again" in worker.log()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 128 + signal.SIGTERM, worker.log()
