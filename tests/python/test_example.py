"""worker/python/examples/fashion_mnist.py: ps_worker's models, split,
flags and metrics, so C++ and Python workers share a job."""

import json
import os
import sys

import numpy as np
import pytest

import pyps
from conftest import BIN_DIR, wait_for
from ps.v1 import parameter_server_pb2 as pb

SOURCE = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
EXAMPLE = os.path.join(SOURCE, "worker/python/examples/fashion_mnist.py")
sys.path.insert(0, os.path.dirname(EXAMPLE))
import fashion_mnist  # noqa: E402


def python_worker(servers, rank, num_workers, *flags):
    return [sys.executable, "-u", EXAMPLE,
            f"--servers={','.join(servers.addresses)}", f"--rank={rank}",
            f"--num_workers={num_workers}", *flags]


def cpp_worker(servers, rank, num_workers, *flags):
    # The Python worker trains part --rank of the set (pyps leases no data
    # partitions): beside it, ps_worker must split by rank too, not lease
    # its default 64 partitions (it would train the whole set alone).
    return [f"{BIN_DIR}/ps_worker", f"--servers={','.join(servers.addresses)}",
            f"--rank={rank}", f"--num_workers={num_workers}",
            "--data_partitions=0", *flags]


def status(client):
    return [s.stub.Status(pb.StatusRequest(), timeout=10)
            for s in client._shards]


@pytest.mark.parametrize("name", ["softmax", "mlp"])
def test_models_declare_ps_workers_tensors_and_initial_values(
        servers, spawn, name):
    # Sync: ps_worker's first round waits for this worker, so θ is still
    # what ps_worker declared when it is read here.
    servers.start(2, "--mode=sync", "--num_workers=2")
    spawn("ps_worker", cpp_worker(servers, 0, 2, f"--model={name}",
                                  "--seed=7"))
    model = fashion_mnist.MODELS[name](784, 10, seed=7)
    with pyps.Client(servers.addresses, 1, num_workers=2) as client:
        wait_for(lambda: all(s.initialized for s in status(client)), 60,
                 "ps_worker to declare the model")
        info = pyps.torch.Worker(model, client).init()
        assert not info.created and info.mode == "sync"
        theta = client.pull()
        declared = status(client)[0].tensors
        params = dict(model.named_parameters())
        assert [t.name for t in declared] == list(params)
        assert [t.exempt_from_regularization for t in declared] == [
            n.endswith("bias") for n in params]
        for tensor_name, p in params.items():
            np.testing.assert_array_equal(theta[tensor_name],
                                          p.detach().numpy())


def last_line(path):
    with open(path) as f:
        return json.loads(f.read().splitlines()[-1])


@pytest.mark.slow
def test_mixed_sync_mlp_job_ends_like_two_cpp_workers(servers, spawn,
                                                      tmp_path):
    flags = ["--model=mlp", "--epochs=1", "--eval_every=1"]
    results = {}
    for job, python_ranks in (("cpp", ()), ("mixed", (0,))):
        job_servers = type(servers)(tmp_path / job, servers._processes)
        (tmp_path / job).mkdir()
        job_servers.start(2, "--mode=sync", "--num_workers=2")
        metrics = tmp_path / f"{job}.jsonl"
        workers = [
            spawn(f"{job}-{rank}", (python_worker if rank in python_ranks
                                    else cpp_worker)(
                job_servers, rank, 2, *flags, f"--metrics_out={metrics}"))
            for rank in range(2)]
        for worker in workers:
            assert worker.wait(240) == 0, worker.log()
        results[job] = last_line(metrics)
    cpp, mixed = results["cpp"], results["mixed"]
    print("2 C++ workers:", cpp, "\n1 Python + 1 C++:", mixed)
    # The same fields as ps_worker's lines.
    assert list(mixed) == list(cpp)
    assert mixed["step"] == cpp["step"] and mixed["mode"] == "sync"
    assert abs(mixed["test_accuracy"] - cpp["test_accuracy"]) <= 0.005, (
        cpp, mixed)


def test_npz_data_and_rank_from_job_completion_index(servers, spawn,
                                                     tmp_path):
    rng = np.random.default_rng(3)
    # Two separable classes of 4x4 "images".
    for name, n in (("train", 256), ("test", 64)):
        y = rng.integers(0, 2, n)
        x = rng.normal(0, 0.1, (n, 16)) + y[:, None]
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    # A modest step: in async mode two workers' gradients, both computed on
    # one θ, can land back to back, and at --lr=0.5 such a double step
    # sometimes killed every ReLU of the CNN (one CI run: accuracy 0.55).
    servers.start(1, "--mode=async", "--num_workers=2", "--lr=0.1")
    metrics = tmp_path / "metrics.jsonl"
    env = dict(os.environ, JOB_COMPLETION_INDEX="1")
    spawn("rank1", python_worker(servers, -1, 2, "--model=cnn",
                                 f"--train={tmp_path}/train.npz",
                                 f"--test={tmp_path}/test.npz",
                                 "--batch_size=16", "--epochs=2"), env=env)
    # ps_worker's flagfile syntax, as a ConfigMap would give it.
    (tmp_path / "worker.flags").write_text(
        f"# shared\n--model=cnn\n--train={tmp_path}/train.npz\n"
        f"--test={tmp_path}/test.npz\n--batch_size=16\n--epochs=2\n")
    rank0 = spawn("rank0", python_worker(
        servers, 0, 2, f"--flagfile={tmp_path}/worker.flags",
        f"--metrics_out={metrics}"))
    assert rank0.wait(120) == 0, rank0.log()
    line = last_line(metrics)
    assert line["model"] == "cnn" and line["workers"] == 2
    # Both ranks' examples were applied: 2 epochs of 256.
    assert line["samples"] == 2 * 256
    assert line["test_accuracy"] > 0.9


def test_bad_flags_stop_the_example_with_one_clear_line(tmp_path):
    import subprocess
    run = subprocess.run(
        [sys.executable, EXAMPLE, "--servers=127.0.0.1:1", "--rank=2",
         "--num_workers=2"], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "--rank=2 must be below --num_workers=2" in run.stderr


SPARSE_EXAMPLE = os.path.join(SOURCE,
                              "worker/python/examples/sparse_logreg.py")


def test_sparse_logreg_learns_generated_ctr_data(servers, spawn, tmp_path):
    # A small ps_datagen ctr set: its Bayes AUC is 0.795 (linear part 0.794).
    data = tmp_path / "ctr"
    datagen = spawn("ps_datagen", [f"{BIN_DIR}/ps_datagen", "ctr",
                                   f"--out={data}", "--rows=20k",
                                   "--ids=20k", "--fields=8", "--seed=3"])
    assert datagen.wait(60) == 0, datagen.log()
    servers.start(2, "--mode=async", "--lr=0.5")
    worker = spawn("sparse_logreg", [
        sys.executable, "-u", SPARSE_EXAMPLE,
        f"--servers={','.join(servers.addresses)}",
        f"--train={data / 'train.libsvm'}", f"--test={data / 'test.libsvm'}",
        "--optimizer=adagrad"])
    assert worker.wait(120) == 0, worker.log()
    result = json.loads(worker.log().strip().splitlines()[-1])
    assert result["steps"] == 79  # 20k rows in batches of 256
    # Chance is 0.5; one epoch got 0.752 (2026-12-05).
    assert result["test_auc"] > 0.65, result
    with pyps.Client(servers.addresses, 0) as client:
        rows = [s.tables[0].rows for s in status(client)]
    # The weights live on both shards.
    assert min(rows) > 0, rows
