"""θ goes out and comes back bit for bit, whatever the caller's dtype and
memory layout; bad tensors are refused before anything is sent."""

import threading
import time

import grpc
import numpy as np
import pytest

import pyps
from conftest import wait_for
from pyps.retry import is_retryable
from ps.v1 import parameter_server_pb2 as pb


def model(rng):
    """Tensors of every shape case, in declaration order; 3 shards split
    them across tensor boundaries."""
    return {
        "ones": rng.standard_normal((1, 1, 1)).astype(np.float32),
        "one": rng.standard_normal(1).astype(np.float32),
        "vector": rng.standard_normal(7).astype(np.float32),
        "matrix": rng.standard_normal((3, 5)).astype(np.float32),
        "cube": rng.standard_normal((2, 3, 4)).astype(np.float32),
    }


def status(client):
    return [shard.stub.Status(pb.StatusRequest(), timeout=10)
            for shard in client._shards]


@pytest.mark.parametrize("num_shards", [1, 3])
def test_every_shape_comes_back_bit_for_bit(servers, num_shards):
    servers.start(num_shards, "--mode=async", "--num_workers=1")
    theta = model(np.random.default_rng(1))
    with pyps.Client(servers.addresses, 0) as client:
        info = client.init(theta, exempt_from_regularization={"one"})
        assert info.created and info.mode == "async"
        pulled = client.pull()
        assert list(pulled) == list(theta)
        for name, value in theta.items():
            assert pulled[name].dtype == np.float32
            assert pulled[name].shape == np.shape(value)
            np.testing.assert_array_equal(pulled[name], value)
        tensors = [t for s in status(client) for t in s.tensors][:len(theta)]
        assert [t.name for t in tensors] == list(theta)
        assert [t.exempt_from_regularization for t in tensors] == [
            False, True, False, False, False]


def test_a_tensor_the_server_refuses_raises_rejected_with_its_reason(servers):
    servers.start(1, "--mode=async")
    with pyps.Client(servers.addresses, 0) as client:
        with pytest.raises(pyps.Rejected) as raised:
            client.init({"scalar": np.float32(1)})
        assert "tensor 'scalar' has no dimensions" in str(raised.value)


@pytest.mark.parametrize("layout", ["float32", "float64", "float16",
                                    "transposed", "fortran", "strided"])
def test_gradient_of_any_float_layout_is_applied_as_float32(servers, layout):
    servers.start(2, "--mode=async", "--lr=0.5", "--l2=0")
    rng = np.random.default_rng(2)
    theta = {"w": rng.standard_normal((4, 6)).astype(np.float32),
             "b": rng.standard_normal(6).astype(np.float32)}
    want = {"w": rng.standard_normal((4, 6)), "b": rng.standard_normal(6)}
    grads = {
        "float32": lambda g: g.astype(np.float32),
        "float64": lambda g: g,
        "float16": lambda g: g.astype(np.float16),
        "transposed": lambda g: np.ascontiguousarray(g.T).T if g.ndim == 2
        else g,
        "fortran": lambda g: np.asfortranarray(g),
        "strided": lambda g: np.repeat(g, 2, axis=-1)[..., ::2],
    }[layout]
    sent = {name: grads(g) for name, g in want.items()}
    with pyps.Client(servers.addresses, 0) as client:
        client.init(theta)
        client.pull()
        after = client.push_pull(sent, batch_size=8)
        for name in theta:
            expected = theta[name] - np.float32(0.5) * np.asarray(
                sent[name], dtype=np.float32)
            np.testing.assert_allclose(after[name], expected, rtol=1e-6,
                                       atol=1e-6)


@pytest.mark.parametrize("bad, message", [
    ({"w": np.zeros((6, 4), np.float32), "b": np.zeros(6, np.float32)},
     "tensor 'w' has shape (6, 4), declared (4, 6)"),
    ({"w": np.zeros((4, 6), np.int32), "b": np.zeros(6, np.float32)},
     "tensor 'w' has dtype int32"),
    ({"w": np.zeros((4, 6), np.float32)}, "missing ['b']"),
    ({"w": np.zeros((4, 6), np.float32), "b": np.zeros(6, np.float32),
      "c": np.zeros(1, np.float32)}, "undeclared ['c']"),
])
def test_wrong_gradient_is_a_value_error_before_sending(servers, bad, message):
    servers.start(2, "--mode=async")
    with pyps.Client(servers.addresses, 0) as client:
        client.init({"w": np.ones((4, 6), np.float32),
                     "b": np.ones(6, np.float32)})
        for call in (client.push, client.push_pull):
            with pytest.raises(ValueError) as raised:
                call(bad, 8)
            assert message in str(raised.value)
        # Nothing reached a server, nothing changed, the seq was not spent.
        for s in status(client):
            assert s.pushes_applied == 0 and s.pushes_rejected == 0
        client.push({"w": np.ones((4, 6)), "b": np.ones(6)}, 8)
        assert sum(s.pushes_applied for s in status(client)) == 2


def test_non_finite_gradient_is_rejected_by_the_server_and_theta_kept(servers):
    servers.start(1, "--mode=async")
    with pyps.Client(servers.addresses, 0) as client:
        client.init({"w": np.ones(3, np.float32)})
        with pytest.raises(pyps.Rejected) as raised:
            client.push({"w": np.array([1.0, np.nan, 0.0])}, 4)
        assert "127.0.0.1" in str(raised.value)
        np.testing.assert_array_equal(client.pull()["w"], np.ones(3))


def test_a_request_larger_than_the_server_reads_is_rejected_at_once(servers):
    # 1024 keys: the server reads requests up to 4 KiB of values + 1 MiB.
    servers.start(1, "--mode=async", "--num_workers=1",
                  "--max_keys_per_shard=1024")
    with pyps.Client(servers.addresses, 0, rpc_deadline=2.0,
                     max_retry_time=10.0) as client:
        start = time.monotonic()
        with pytest.raises(pyps.Rejected, match="larger than max"):
            client.init({"w": np.zeros(300_000, np.float32)})
        assert time.monotonic() - start < 5.0, "it was retried"
        # Nothing was declared.
        assert not status(client)[0].initialized


class _Refusal(grpc.RpcError):
    """A RESOURCE_EXHAUSTED as a server sends it, with or without reason."""

    def __init__(self, reason=None):
        from google.rpc import error_details_pb2, status_pb2
        details = status_pb2.Status(code=8, message="full")
        if reason:
            details.details.add().Pack(error_details_pb2.ErrorInfo(
                reason=reason, domain="ps.v1"))
        self._metadata = (("grpc-status-details-bin",
                           details.SerializeToString()),)

    def code(self):
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def trailing_metadata(self):
        return self._metadata


def test_only_the_parked_pulls_bound_is_retried_of_resource_exhausted():
    assert is_retryable(_Refusal("TOO_MANY_PARKED_PULLS"))
    assert not is_retryable(_Refusal())
    assert not is_retryable(_Refusal("SOMETHING_ELSE"))


def test_waited_seconds_is_how_long_the_server_held_the_pull(servers):
    servers.start(1, "--mode=sync", "--num_workers=2")
    ones = {"w": np.ones(4)}
    with pyps.Client(servers.addresses, 0, num_workers=2) as first, \
            pyps.Client(servers.addresses, 1, num_workers=2) as second:
        for client in (first, second):
            client.init({"w": np.zeros(4, np.float32)})
            client.pull()  # round 0: answered at once
            assert client.waited_seconds == 0.0
        # The first worker's pull for round 1 waits for the second's push.
        held = []
        pusher = threading.Thread(
            target=lambda: held.append(first.push_pull(ones, 1)))
        start = time.monotonic()
        pusher.start()
        wait_for(lambda: status(first)[0].round_gradients == 1, 30,
                 "the first push to arrive")
        second.push_pull(ones, 1)
        pusher.join(30)
        elapsed = time.monotonic() - start
    assert held, "the first worker's push_pull did not return"
    assert 0.0 < first.waited_seconds <= elapsed
    assert second.waited_seconds == 0.0  # its push closed the round


def test_a_tensor_declares_its_own_optimizer_and_schedule(servers):
    # The server runs sgd; the weights run adam. One adam step moves each
    # weight by lr · ĝ/(|ĝ| + ε) ≈ lr against its gradient's sign (bias
    # corrected, t = 1), whatever the gradient's size; the biases take plain
    # sgd steps (exempt, no L2).
    servers.start(1, "--mode=async", "--lr=0.01", "--l2=0")
    theta = {"w": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)}
    grad = {"w": np.array([100.0, -0.5, 3.0, -8.0], np.float32),
            "b": np.array([2.0, -4.0], np.float32)}
    with pyps.Client(servers.addresses, 0) as client:
        client.init(theta, exempt_from_regularization={"b"},
                    optimizers={"w": "adam"},
                    lr_schedules={"b": "step:1:0.5"})
        client.pull()
        after = client.push_pull(grad, batch_size=1)
        np.testing.assert_allclose(after["w"], -0.01 * np.sign(grad["w"]),
                                   rtol=1e-5)
        np.testing.assert_allclose(after["b"], -0.01 * grad["b"], rtol=1e-6)
        tensors = status(client)[0].tensors
        assert [(t.optimizer, t.lr_schedule) for t in tensors] == [
            ("adam", ""), ("", "step:1:0.5")]


def test_an_optimizer_the_server_cannot_read_is_refused_naming_it(servers):
    servers.start(1, "--mode=async")
    with pyps.Client(servers.addresses, 0) as client:
        with pytest.raises(ValueError):
            client.init({"w": np.zeros(3, np.float32)},
                        optimizers={"v": "adam"})
        with pytest.raises(pyps.Rejected) as raised:
            client.init({"w": np.zeros(3, np.float32)},
                        optimizers={"w": "adam(beta1=1)"})
        assert "tensor 'w': optimizer 'adam(beta1=1)'" in str(raised.value)
