"""C++ and Python workers split θ over the shards the same way: whichever
declares the model second sees it created already, with no mismatch."""

import numpy as np

import pyps
from conftest import BIN_DIR, wait_for
from ps.v1 import parameter_server_pb2 as pb
from pyps.key_range import balanced_part

# ps_worker's softmax model (worker/model.cc): names, shapes, exemptions and
# key order.
SOFTMAX = {"softmax/weights": np.zeros((784, 10), np.float32),
           "softmax/bias": np.zeros(10, np.float32)}
EXEMPT = {"softmax/bias"}
NUM_KEYS = 7850
SHARDS = 3  # 7850 keys: 2617, 2617, 2616, split inside the weights


def ps_worker(servers, rank):
    return [f"{BIN_DIR}/ps_worker", f"--servers={','.join(servers.addresses)}",
            f"--rank={rank}", "--num_workers=2", "--model=softmax",
            "--epochs=1", "--batch_size=256", "--eval_every=1"]


def status(client):
    return [s.stub.Status(pb.StatusRequest(), timeout=10)
            for s in client._shards]


def test_python_joins_a_model_a_cpp_worker_declared(servers, spawn):
    servers.start(SHARDS, "--mode=async", "--num_workers=2")
    cpp = spawn("ps_worker", ps_worker(servers, rank=0))
    with pyps.Client(servers.addresses, 1, num_workers=2) as client:
        wait_for(lambda: all(s.initialized for s in status(client)), 60,
                 "ps_worker to declare the model")
        info = client.init(SOFTMAX, exempt_from_regularization=EXEMPT)
        assert not info.created
        for i, s in enumerate(status(client)):
            assert (s.key_begin, s.key_end) == balanced_part(
                NUM_KEYS, SHARDS, i)
        assert client.pull()["softmax/weights"].shape == (784, 10)
    assert cpp.wait(120) == 0, cpp.log()


def test_cpp_joins_a_model_a_python_worker_declared(servers, spawn):
    servers.start(SHARDS, "--mode=async", "--num_workers=2")
    # ps_worker rank 1: rank 0 would wait for this worker to finish.
    with pyps.Client(servers.addresses, 0, num_workers=2) as client:
        assert client.init(SOFTMAX, exempt_from_regularization=EXEMPT).created
        cpp = spawn("ps_worker", ps_worker(servers, rank=1))
        assert cpp.wait(120) == 0, cpp.log()
        assert "holds another model" not in cpp.log()


def test_a_different_model_raises_model_mismatch_naming_the_tensor(servers):
    servers.start(SHARDS, "--mode=async", "--num_workers=2")
    with pyps.Client(servers.addresses, 0, num_workers=2) as first:
        first.init(SOFTMAX, exempt_from_regularization=EXEMPT)
        with pyps.Client(servers.addresses, 1, num_workers=2) as second:
            other = dict(SOFTMAX, **{"softmax/bias": np.zeros(11, np.float32)})
            try:
                second.init(other, exempt_from_regularization=EXEMPT)
            except pyps.ModelMismatch as mismatch:
                assert "softmax/bias" in str(mismatch)
            else:
                raise AssertionError("a different model was accepted")
