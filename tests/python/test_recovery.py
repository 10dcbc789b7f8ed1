"""A server killed with kill -9 and restarted from its checkpoint: the
Python worker rides it through, losing only the pushes after the
checkpoint, and each of its pushes counts once."""

import signal
import threading

import numpy as np

import pyps
from ps.v1 import parameter_server_pb2 as pb


def test_worker_rides_through_kill_9_and_restart_from_checkpoint(
        servers, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    servers.start(2, "--mode=async", "--lr=0.5", "--l2=0",
                  f"--checkpoint_dir={checkpoints}")
    ones = {"w": np.ones(6)}
    with pyps.Client(servers.addresses, 0, rpc_deadline=2.0,
                     max_retry_time=60.0) as client:
        client.init({"w": np.zeros(6, np.float32)})
        client.pull()
        for _ in range(3):
            client.push(ones, 1)
        shard = client._shards[1]
        shard.stub.Checkpoint(pb.CheckpointRequest(), timeout=10)
        client.push(ones, 1)  # after the checkpoint: shard 1 loses it
        servers.shards[1].signal(signal.SIGKILL)
        servers.shards[1].wait(10)

        # The push in flight while shard 1 is down: retried until it is
        # back, then applied once.
        pushed = threading.Event()
        failure = []

        def push():
            try:
                client.push(ones, 1)
            except pyps.Error as error:
                failure.append(error)
            pushed.set()
        pusher = threading.Thread(target=push)
        pusher.start()
        servers.restart(1)
        assert pushed.wait(60), "the push did not finish after the restart"
        pusher.join()
        assert not failure, failure
        theta = client.pull()["w"]
        versions = [s.stub.Status(pb.StatusRequest(), timeout=10).version
                    for s in client._shards]
    # Shard 0 (keys 0-2) saw all 5 pushes; shard 1 (keys 3-5) restored 3
    # and took the one after the restart.
    np.testing.assert_array_equal(theta, [-2.5] * 3 + [-2.0] * 3)
    assert versions == [5, 4]


def test_ssp_workers_pulling_then_pushing_ride_through_an_older_checkpoint(
        servers, tmp_path):
    # The checkpoint is 4 steps behind the workers, more than --staleness:
    # each worker's next pull is past the clock the restored shard has for
    # it, and must be answered, not refused.
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    servers.start(1, "--mode=ssp", "--staleness=1", "--num_workers=2",
                  "--lr=0.5", "--l2=0", f"--checkpoint_dir={checkpoints}")
    ones = {"w": np.ones(4)}
    with pyps.Client(servers.addresses, 0, num_workers=2, rpc_deadline=2.0,
                     max_retry_time=60.0) as first, \
            pyps.Client(servers.addresses, 1, num_workers=2,
                        rpc_deadline=2.0, max_retry_time=60.0) as second:
        workers = [first, second]
        first.init({"w": np.zeros(4, np.float32)})
        second.init({"w": np.zeros(4, np.float32)})

        def steps(count):
            for _ in range(count):
                for worker in workers:
                    worker.pull()
                    worker.push(ones, 1)
        steps(3)
        stub = first._shards[0].stub
        stub.Checkpoint(pb.CheckpointRequest(), timeout=10)
        steps(4)  # lost with the kill
        servers.shards[0].signal(signal.SIGKILL)
        servers.shards[0].wait(10)
        servers.restart(0)
        steps(3)
        theta = first.pull()["w"]
        status = stub.Status(pb.StatusRequest(), timeout=10)
    # 6 pushes restored, 6 after the restart, each applied once.
    assert status.version == 12
    assert status.samples_applied == 12
    np.testing.assert_array_equal(theta, [-6.0] * 4)
    assert [w.clock for w in status.workers] == [10, 10]
