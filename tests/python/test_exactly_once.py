"""A push whose reply is lost is sent again with the same seq and applied
once: θ moves by exactly one step per push under injected faults."""

import numpy as np

import pyps
from ps.v1 import parameter_server_pb2 as pb

PUSHES = 40


def test_retried_pushes_are_applied_once_under_injected_faults(servers):
    # The servers do the work, then lose or fail the reply: the client's
    # retry carries a seq the server has applied already.
    servers.start(2, "--mode=async", "--lr=0.5", "--l2=0",
                  "--inject_faults=seed=5,drop=0.15,error=UNAVAILABLE:0.15,"
                  "methods=Push|PushPull")
    theta = {"w": np.zeros((5, 3), np.float32), "b": np.zeros(4, np.float32)}
    ones = {"w": np.ones((5, 3)), "b": np.ones(4)}
    with pyps.Client(servers.addresses, 0, rpc_deadline=2.0) as client:
        client.init(theta)
        client.pull()
        for i in range(PUSHES):
            if i % 2:
                client.push(ones, 1)
            else:
                client.push_pull(ones, 1)
        pulled = client.pull()
        # Counted as the C++ client counts: a DUPLICATE answer to a retry
        # is this call's own push, applied once.
        assert client.push_counts == pyps.PushCounts(
            applied_or_accepted=2 * PUSHES)
        answers = [s.stub.Status(pb.StatusRequest(), timeout=10)
                   for s in client._shards]
    # 0.5 per push, exact in float32.
    np.testing.assert_array_equal(pulled["w"], np.full((5, 3), -0.5 * PUSHES))
    np.testing.assert_array_equal(pulled["b"], np.full(4, -0.5 * PUSHES))
    for status in answers:
        assert status.pushes_applied == PUSHES
        # The faults were there: some pushes arrived twice.
        assert status.pushes_duplicate > 0
