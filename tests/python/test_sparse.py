"""pyps's sparse tables against real servers: keys fanned out to the shard
SplitMix64(id) mod S holds, rows back in the caller's order, the servers'
optimizer step bit for bit as a NumPy reference computes it, and a retried
sparse push applied once."""

import numpy as np
import pytest

import pyps
from ps.v1 import parameter_server_pb2 as pb
from pyps.sparse import shard_of_ids, splitmix64

LR = np.float32(0.125)
EPSILON = np.float32(1e-3)
DIM = 4


def _splitmix64_of_int(x):
    """common/splitmix64.h in Python integers, one id at a time."""
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_vectorised_splitmix64_is_the_servers_hash():
    # SplitMix64(0) is the reference sequence's first value (splitmix64.h).
    assert int(splitmix64(np.zeros(1, np.uint64))[0]) == 0xE220A8397B1DCDAF
    ids = np.random.default_rng(3).integers(0, 2**64, size=500,
                                            dtype=np.uint64)
    ids[:3] = [0, 2**64 - 1, 2**63]
    assert splitmix64(ids).tolist() == [
        _splitmix64_of_int(int(i)) for i in ids]


def _batches(seed):
    """Three pushes' keys (with repeats) and gradient rows, and a pull's."""
    rng = np.random.default_rng(seed)
    universe = rng.integers(0, 2**64, size=60, dtype=np.uint64)
    pushes = []
    for _ in range(3):
        keys = rng.choice(universe, size=80)  # repeats: summed by the server
        rows = rng.normal(size=(keys.size, DIM)).astype(np.float32)
        pushes.append((keys, rows))
    return universe, pushes


def _reference(optimizer, initial, universe, pushes):
    """The rows after the pushes, as the server computes them in float32:
    a push's rows of a key summed in the order given, then one step."""
    theta = {int(k): initial[i].copy() for i, k in enumerate(universe)}
    accumulator = {k: np.zeros(DIM, np.float32) for k in theta}
    for keys, rows in pushes:
        summed = {}
        for key, row in zip(keys.tolist(), rows):
            summed[key] = summed[key] + row if key in summed else row.copy()
        for key, g in summed.items():
            if optimizer == "sgd":
                theta[key] = theta[key] - LR * g
            else:
                accumulator[key] += g * g
                eta = LR / (np.sqrt(accumulator[key]) + EPSILON)
                theta[key] = theta[key] - eta * g
    return np.stack([theta[int(k)] for k in universe])


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_sparse_rows_match_a_numpy_reference_on_three_shards(servers,
                                                            optimizer):
    servers.start(3, "--mode=async", f"--lr={LR}", "--l2=0")
    spec = "sgd" if optimizer == "sgd" else f"adagrad(epsilon={EPSILON})"
    universe, pushes = _batches(seed=7)
    # Every shard holds some of the keys.
    assert set(shard_of_ids(universe, 3).tolist()) == {0, 1, 2}
    with pyps.Client(servers.addresses, 0) as client:
        client.init({}, tables=[pyps.Table("emb", DIM, "uniform(0.5)", spec)],
                    model_seed=11)
        initial = client.pull_sparse("emb", universe)
        assert np.all(np.abs(initial) <= 0.5) and np.any(initial != 0)
        # Reading creates nothing and the order is the caller's: the
        # reversed keys read the reversed rows.
        np.testing.assert_array_equal(
            client.pull_sparse("emb", universe[::-1]), initial[::-1])
        client.push_sparse("emb", *pushes[0], batch_size=8)
        client.push_sparse({"emb": pushes[1]}, batch_size=8)
        pulled = client.push_pull_sparse({"emb": pushes[2]}, 8,
                                         {"emb": universe})["emb"]
        statuses = [s.stub.Status(pb.StatusRequest(), timeout=10)
                    for s in client._shards]
    expected = _reference(optimizer, initial, universe, pushes)
    np.testing.assert_array_equal(pulled.view(np.uint32),
                                  expected.view(np.uint32))
    # Each shard holds exactly the rows of its keys.
    touched = np.unique(np.concatenate([keys for keys, _ in pushes]))
    held = np.bincount(shard_of_ids(touched, 3), minlength=3)
    assert [s.tables[0].rows for s in statuses] == held.tolist()


def test_a_model_of_tensors_and_tables_pushes_both_in_one_update(servers):
    servers.start(2, "--mode=async", "--lr=0.5", "--l2=0")
    keys = np.array([3, 1 << 40, 3], dtype=np.uint64)
    with pyps.Client(servers.addresses, 0) as client:
        client.init({"b": np.zeros(3, np.float32)},
                    tables=[pyps.Table("emb", 2)])
        with pytest.raises(ValueError, match="pass their gradient"):
            client.push_sparse("emb", keys, np.ones((3, 2), np.float32),
                               batch_size=1)
        client.push_sparse("emb", keys, np.ones((3, 2), np.float32),
                           batch_size=1, grads={"b": np.ones(3, np.float32)})
        theta, rows = client.pull_sparse("emb", keys[:2], dense=True)
    np.testing.assert_array_equal(theta["b"], np.full(3, -0.5, np.float32))
    # Key 3 came twice: its rows were summed into one step.
    np.testing.assert_array_equal(rows, [[-1.0, -1.0], [-0.5, -0.5]])


def test_bad_sparse_input_is_refused_before_anything_is_sent(servers):
    servers.start(2, "--mode=async", "--lr=0.5", "--l2=0")
    keys = np.array([5, 6], dtype=np.uint64)
    good = np.ones((2, 3), np.float32)
    with pyps.Client(servers.addresses, 0) as client:
        client.init({}, tables=[pyps.Table("emb", 3)])
        for call, message in [
                (lambda: client.pull_sparse("nope", keys),
                 "table 'nope' was not declared"),
                (lambda: client.pull_sparse("emb", keys.astype(np.float64)),
                 "dtype float64; uint64"),
                (lambda: client.pull_sparse("emb", keys.reshape(2, 1)),
                 "a 1-D array"),
                (lambda: client.pull_sparse("emb", np.array([-1, 2])),
                 "negative id"),
                (lambda: client.push_sparse("emb", keys, good[:, :2],
                                            batch_size=1),
                 r"have shape \(2, 2\); 2 keys of dim 3 need \(2, 3\)"),
                (lambda: client.push_sparse("emb", keys, good.astype(int),
                                            batch_size=1),
                 "a float array"),
                (lambda: client.push_sparse("emb", keys, good * np.nan,
                                            batch_size=1),
                 "NaN or infinite"),
                (lambda: client.push_sparse({"emb": keys}, batch_size=1),
                 r"\(keys, rows\)")]:
            with pytest.raises(ValueError, match=message):
                call()
        assert client.step == 0  # no push was numbered
        statuses = [s.stub.Status(pb.StatusRequest(), timeout=10)
                    for s in client._shards]
    for status in statuses:
        assert status.pushes_applied == 0
        assert status.tables[0].rows == 0


def test_declaring_other_tables_than_the_servers_hold_is_a_model_mismatch(
        servers):
    servers.start(1, "--mode=async")
    first = pyps.Client(servers.addresses, 0)
    first.init({}, tables=[pyps.Table("emb", 3)])
    first.close(finished=False)  # a restart resumes: the job goes on
    with pyps.Client(servers.addresses, 0) as client:
        with pytest.raises(pyps.ModelMismatch, match="dim 3.*dim 4"):
            client.init({}, tables=[pyps.Table("emb", 4)])


PUSHES = 30


def test_retried_sparse_pushes_are_applied_once_under_injected_faults(
        servers):
    servers.start(3, "--mode=async", "--lr=0.5", "--l2=0",
                  "--inject_faults=seed=5,drop=0.15,error=UNAVAILABLE:0.15,"
                  "methods=Push|PushPull")
    keys = np.array([1, 2, 3, 4, 5, 6, 7, 8, 1], dtype=np.uint64)
    ones = np.ones((keys.size, 2), np.float32)
    with pyps.Client(servers.addresses, 0, rpc_deadline=2.0) as client:
        client.init({}, tables=[pyps.Table("emb", 2)])
        for i in range(PUSHES):
            if i % 2:
                client.push_sparse("emb", keys, ones, batch_size=1)
            else:
                client.push_pull_sparse({"emb": (keys, ones)}, 1,
                                        {"emb": keys})
        rows = client.pull_sparse("emb", keys[:8])
        assert client.push_counts == pyps.PushCounts(
            applied_or_accepted=3 * PUSHES)
        answers = [s.stub.Status(pb.StatusRequest(), timeout=10)
                   for s in client._shards]
    # 0.5 per push, exact in float32; key 1 twice in each push.
    expected = np.full((8, 2), -0.5 * PUSHES, np.float32)
    expected[0] *= 2
    np.testing.assert_array_equal(rows, expected)
    for status in answers:
        assert status.pushes_applied == PUSHES
    assert sum(status.pushes_duplicate for status in answers) > 0
