"""Before registering, the client asks every shard's Status, as ps_worker
does: a wrong server order is refused without joining, and a finished job
is reported, not trained again."""

import numpy as np
import pytest

import pyps
from conftest import server_status


def test_servers_listed_out_of_order_are_refused_before_registering(servers):
    servers.start(2, "--mode=async")
    with pytest.raises(pyps.Rejected) as raised:
        pyps.Client(servers.addresses[::-1], 0)
    assert "list the servers in shard order" in str(raised.value)
    assert all(not server_status(a).workers for a in servers.addresses)


def test_too_few_servers_are_refused_before_registering(servers):
    servers.start(2, "--mode=async")
    with pytest.raises(pyps.Rejected) as raised:
        pyps.Client(servers.addresses[:1], 0)
    assert "give every server of the job" in str(raised.value)
    assert all(not server_status(a).workers for a in servers.addresses)


def test_a_finished_job_is_reported_and_not_joined(servers):
    servers.start(2, "--mode=async", "--num_workers=1")
    with pyps.Client(servers.addresses, 0) as client:
        client.init({"w": np.zeros(4, np.float32)})
        client.pull()
        client.push({"w": np.ones(4)}, 1)
    # The with-block ended normally: the worker left as finished.
    assert all(server_status(a).workers[0].finished for a in servers.addresses)
    with pyps.Client(servers.addresses, 0) as again:
        assert again.job_complete
        with pytest.raises(pyps.Error, match="already complete"):
            again.init({"w": np.zeros(4, np.float32)})
    assert all(server_status(a).workers[0].registrations == 1
               for a in servers.addresses)
