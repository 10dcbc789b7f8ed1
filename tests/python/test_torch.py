"""pyps.torch.Worker: a module's parameters are θ; step() pushes .grad and
loads the servers' answer."""

import numpy as np
import pytest
import torch

import pyps
import pyps.torch
from ps.v1 import parameter_server_pb2 as pb


def module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(),
                               torch.nn.Linear(4, 3))


def run_step(servers, device):
    model = module().to(device)
    before = {n: p.detach().cpu().clone()
              for n, p in model.named_parameters()}
    with pyps.Client(servers.addresses, 0) as client:
        worker = pyps.torch.Worker(model, client)
        assert worker.init().created
        declared = client._shards[0].stub.Status(pb.StatusRequest(),
                                                 timeout=10).tensors
        worker.pull()
        x = torch.randn(8, 5, device=device)
        model(x).square().mean().backward()
        grads = {n: p.grad.detach().cpu().clone()
                 for n, p in model.named_parameters()}
        worker.step(8)
        assert all(p.grad is None for p in model.parameters())
    return model, before, grads, declared


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no GPU on this machine"))])
def test_step_pushes_grad_and_loads_the_update(servers, device):
    servers.start(2, "--mode=async", "--lr=0.25", "--l2=0")
    model, before, grads, declared = run_step(servers, device)
    assert [(t.name, list(t.shape), t.exempt_from_regularization)
            for t in declared] == [("0.weight", [4, 5], False),
                                   ("0.bias", [4], True),
                                   ("2.weight", [3, 4], False),
                                   ("2.bias", [3], True)]
    for name, p in model.named_parameters():
        assert p.device.type == device
        np.testing.assert_allclose(
            p.detach().cpu().numpy(),
            (before[name] - 0.25 * grads[name]).numpy(), rtol=1e-6,
            atol=1e-7)


def test_step_without_backward_is_a_value_error(servers):
    servers.start(1, "--mode=async")
    with pyps.Client(servers.addresses, 0) as client:
        worker = pyps.torch.Worker(module(), client)
        worker.init()
        worker.pull()
        with pytest.raises(ValueError, match="has no gradient"):
            worker.step(8)
