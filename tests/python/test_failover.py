"""A pyps worker told both replicas of a shard ("a0|a1") trains through a
kill -9 of the primary: it follows the backup that takes over, and every
push it saw acknowledged is on the survivor, applied once."""

import signal
import threading

import grpc
import numpy as np

import pyps
from conftest import server_status, start_replica, wait_for
from ps.v1 import parameter_server_pb2 as pb

PUSHES = 600
BATCH = 4


def role(address):
    """The replica's role and term, or None when it does not answer."""
    try:
        replica = server_status(address, timeout=2).replica
    except grpc.RpcError:
        return None
    return replica.role, replica.term


def test_worker_follows_the_new_primary_after_kill_9_and_loses_no_push(
        tmp_path, processes):
    primary, first = start_replica(tmp_path, processes, 0,
                                   ["127.0.0.1:0", "127.0.0.1:0"])
    _, second = start_replica(tmp_path, processes, 1,
                              [first, "127.0.0.1:0"])
    wait_for(lambda: role(second) == (pb.ReplicaState.BACKUP, 1), 30,
             "replica 1 to join")

    ones = {"w": np.ones(8), "b": np.ones(2)}
    failure = []
    with pyps.Client(f"{first}|{second}", 0, rpc_deadline=2.0,
                     max_retry_time=60.0) as client:
        client.init({"w": np.zeros(8, np.float32),
                     "b": np.zeros(2, np.float32)})
        client.pull()

        # The trainer stops a third of the way in until the primary is dead,
        # so the kill lands mid-training however fast the machine pushes.
        reached_kill_point = threading.Event()
        primary_dead = threading.Event()

        def train():
            try:
                for i in range(PUSHES):
                    if i == PUSHES // 3:
                        reached_kill_point.set()
                        primary_dead.wait(60)
                    if i % 2:
                        client.push(ones, BATCH)
                    else:
                        client.push_pull(ones, BATCH)
            except pyps.Error as error:
                failure.append(error)
        trainer = threading.Thread(target=train)
        trainer.start()
        assert reached_kill_point.wait(60), "training did not get under way"
        assert server_status(first).version == PUSHES // 3
        primary.signal(signal.SIGKILL)
        primary.wait(10)
        primary_dead.set()
        trainer.join(120)
        assert not trainer.is_alive(), "training did not finish"
        assert not failure, failure
        theta = client.pull()
        # Every push acknowledged (applied, or answered as a duplicate of
        # an attempt that got there), as ps_worker counts them.
        counts = client.push_counts
        acknowledged = (counts.applied_or_accepted + counts.stale +
                        counts.duplicate)
        calls_went_to = client._shards[0].address
    assert acknowledged == PUSHES
    assert calls_went_to == second
    assert role(second) == (pb.ReplicaState.PRIMARY, 2)

    # The survivor holds each acknowledged push once: in the worker's
    # sequence table, in the sample count, and in θ (0.5 per push, exact
    # in float32).
    status = server_status(second)
    assert [(w.worker_id, w.pushes, w.last_seq) for w in status.workers] == [
        (0, PUSHES, PUSHES)]
    assert status.samples_applied == PUSHES * BATCH
    assert status.version == PUSHES
    np.testing.assert_array_equal(theta["w"], np.full(8, -0.5 * PUSHES))
    np.testing.assert_array_equal(theta["b"], np.full(2, -0.5 * PUSHES))
