"""A network partition between the two replicas of a shard that has a
witness (ps_server --replica_witness, README "A witness for two replicas").

The test routes each replica's view of the other through a TCP link it can
cut, so on loopback the shard is split in two: replica 0 and a worker on
one side, replica 1 and a worker on the other, the witness reaching both.
Both workers push through the partition and after it heals; every push a
worker saw acknowledged must be on the shard afterwards, once. With two
replicas and no witness, both sides would take writes, and one side's
would be lost when they meet again."""

import signal
import socket
import threading
import time

import grpc
import numpy as np
import pytest

import pyps
from conftest import server_status, start_replica, wait_for
from ps.v1 import parameter_server_pb2 as pb

BATCH = 4
PARTITION_S = 3.0


class Link:
    """A TCP relay on 127.0.0.1 to a target port set later. Cut, it closes
    every connection and holds new ones silent, as a partition does."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.target = None
        self._cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(client,),
                             daemon=True).start()

    def _serve(self, client):
        self._keep(client)
        give_up = time.monotonic() + 30
        while (self.target is None or self._cut.is_set()) and \
                time.monotonic() < give_up and not self._closed:
            time.sleep(0.01)  # silent: a partition, or no target yet
        if self.target is None or self._cut.is_set() or self._closed:
            self._close(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            self._close(client)
            return
        self._keep(upstream)
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink),
                             daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        self._close(source)
        self._close(sink)

    def _keep(self, sock):
        with self._lock:
            self._sockets.append(sock)

    def _close(self, sock):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def cut(self):
        self._cut.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            self._close(sock)

    def heal(self):
        self._cut.clear()

    def close(self):
        self._closed = True
        self.cut()
        self._listener.close()


def replica_status(address):
    """The replica's role (ps.v1.ReplicaState), or an empty one when it
    does not answer."""
    try:
        return server_status(address, timeout=2).replica
    except grpc.RpcError:
        return pb.ReplicaState()


def one_primary(addresses):
    """The address of the one primary every replica agrees on (all of one
    term, the others joined), or None."""
    status = [replica_status(a) for a in addresses]
    primaries = [a for a, s in zip(addresses, status)
                 if s.role == pb.ReplicaState.PRIMARY]
    if len(primaries) != 1 or len({s.term for s in status}) != 1:
        return None
    if sum(s.role == pb.ReplicaState.BACKUP for s in status) != \
            len(addresses) - 1:
        return None
    return primaries[0]


class Shard:
    """One shard on two replicas and a witness. Replica 0 reaches replica 1
    only through `to_second`, replica 1 reaches replica 0 only through
    `to_first`; the witness reaches both directly."""

    def __init__(self, tmp_path, processes):
        self.tmp_path = tmp_path
        self.to_first, self.to_second = Link(), Link()
        self.first_process, self.first = start_replica(
            tmp_path, processes, 0,
            ["127.0.0.1:0", self.to_second.address, "127.0.0.1:0"],
            "--num_workers=2")
        self.to_first.target = int(self.first.split(":")[1])
        second_process, self.second = start_replica(
            tmp_path, processes, 1,
            [self.to_first.address, self.to_second.address, "127.0.0.1:0"],
            "--num_workers=2")
        self.to_second.target = int(self.second.split(":")[1])
        _, self.witness = start_replica(
            tmp_path, processes, 2, [self.first, self.second, "127.0.0.1:0"],
            "--num_workers=2", "--replica_witness")
        wait_for(lambda: replica_status(self.witness).role ==
                 pb.ReplicaState.BACKUP, 30, "the witness to join")
        status = replica_status(self.witness)
        assert status.witness and status.replica_index == 2
        wait_for(lambda: replica_status(self.second).role ==
                 pb.ReplicaState.BACKUP, 30, "replica 1 to join")
        # Replica 1 asks the witness for its vote: it learns its address
        # from the primary.
        wait_for(lambda: "learned replica 2's address" in
                 second_process.log(), 30,
                 "replica 1 to learn the witness's address")

    def cut(self):
        self.to_first.cut()
        self.to_second.cut()

    def heal(self):
        self.to_first.heal()
        self.to_second.heal()

    def close(self):
        self.to_first.close()
        self.to_second.close()


@pytest.fixture
def shard(tmp_path, processes):
    made = Shard(tmp_path, processes)
    yield made
    made.close()


def test_a_partition_between_two_replicas_with_a_witness_loses_no_push(
        shard):
    first, second, witness = shard.first, shard.second, shard.witness
    to_first, to_second = shard.to_first, shard.to_second
    ones = {"w": np.ones(8), "b": np.ones(2)}
    # Each worker sits on one side: it reaches its replica directly, the
    # other one through the link.
    sides = [f"{first}|{to_second.address}", f"{to_first.address}|{second}"]
    clients = [pyps.Client(side, rank, num_workers=2, rpc_deadline=2.0,
                           max_retry_time=60.0)
               for rank, side in enumerate(sides)]
    for client in clients:
        client.init({"w": np.zeros(8, np.float32),
                     "b": np.zeros(2, np.float32)})
        client.pull()

    stop = threading.Event()
    acknowledged = [0, 0]
    failures = []

    def train(rank):
        try:
            while not stop.is_set():
                clients[rank].push(ones, BATCH)
                acknowledged[rank] += 1
        except pyps.Error as error:
            failures.append((rank, error))
    trainers = [threading.Thread(target=train, args=(rank,))
                for rank in range(2)]
    for trainer in trainers:
        trainer.start()
    wait_for(lambda: min(acknowledged) >= 20, 30, "training to get under way")

    shard.cut()
    time.sleep(PARTITION_S)
    during = list(acknowledged)
    shard.heal()

    addresses = [first, second, witness]
    wait_for(lambda: one_primary(addresses) is not None, 60,
             "one primary that both others follow")
    # Each worker gets pushes through after the partition.
    wait_for(lambda: all(a > d + 5 for a, d in zip(acknowledged, during)),
             60, "both workers to push again")
    stop.set()
    for trainer in trainers:
        trainer.join(120)
        assert not trainer.is_alive(), "a worker did not stop"
    assert not failures, failures
    theta = clients[0].pull()
    for client in clients:
        client.close()

    primary = one_primary(addresses)
    assert primary in (first, second)
    status = server_status(primary)
    # Every acknowledged push is on the shard once: in each worker's
    # sequence table, the sample count and θ (0.5 a push, exact in float32).
    pushes = {w.worker_id: w.pushes for w in status.workers}
    assert pushes == {0: acknowledged[0], 1: acknowledged[1]}
    total = sum(acknowledged)
    assert status.samples_applied == total * BATCH
    assert status.version == total
    np.testing.assert_array_equal(theta["w"], np.full(8, -0.5 * total))
    np.testing.assert_array_equal(theta["b"], np.full(2, -0.5 * total))


def test_a_backup_that_missed_acknowledged_pushes_cannot_take_over(shard):
    """Cut off and dropped, replica 1 misses pushes the primary then
    acknowledged with the witness. The primary dies (kill -9) and the cut
    heals: replica 1 stands, but the witness holds those pushes committed
    and refuses it, so the shard has no primary rather than one that lost
    acknowledged pushes."""
    ones = {"w": np.ones(8), "b": np.ones(2)}
    with pyps.Client(shard.first, 0, rpc_deadline=2.0,
                     max_retry_time=10.0) as client:
        client.init({"w": np.zeros(8, np.float32),
                     "b": np.zeros(2, np.float32)})
        for _ in range(10):
            client.push(ones, BATCH)
        shard.cut()
        wait_for(lambda: server_status(shard.first).replica.backups_dropped
                 >= 1, 30, "the primary to drop replica 1")
        for _ in range(10):
            client.push(ones, BATCH)  # acknowledged with the witness
    acknowledged = server_status(shard.first).version
    assert acknowledged >= 20
    second_log = shard.tmp_path / "replica1.log"
    before = second_log.read_text().count("lost the pre-vote")
    shard.first_process.signal(signal.SIGKILL)
    shard.first_process.wait(10)
    shard.heal()
    # Replica 1 keeps standing: a pre-vote the witness refuses, with its log
    # behind (each standing is a line "lost the pre-vote").
    wait_for(lambda: second_log.read_text().count("lost the pre-vote") >=
             before + 3, 30, "replica 1 to stand three times")
    status = replica_status(shard.second)
    assert status.role != pb.ReplicaState.PRIMARY
    assert server_status(shard.second).version < acknowledged
