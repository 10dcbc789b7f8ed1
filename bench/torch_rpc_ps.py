#!/usr/bin/env python3
"""pyps beside torch.distributed.rpc, measured in one run on this machine.

The same model (the example's --model=mlp: 784-128-10, ps_worker's
tensors), the same data split and order, batch 64, lr 0.1, async:

  torch_rpc  1 parameter-server process + 2 trainer processes over
             torch.distributed.rpc (TensorPipe on 127.0.0.1): each step
             sends the gradients and gets the new parameters back in one
             rpc_sync, as pyps's PushPull does.
  pyps       2 ps_server shards (--mode=async --lr=0.1) + 2 Python workers
             (worker/python/examples/fashion_mnist.py --model=mlp).

Prints one JSON line per system: samples/s over the run, the seconds
until rank 0 first measured >= --target test accuracy, and the CPU seconds
all its processes used (start-up included). Both systems are CPU-bound on
2 cores, so CPU per sample bounds what either can reach when the machine
is shared, and is steadier than samples/s there.

  PYTHONPATH=build/python python3 bench/torch_rpc_ps.py --build=build
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

import torch
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "worker", "python", "examples",
                       "fashion_mnist.py")
sys.path.insert(0, os.path.dirname(EXAMPLE))
import fashion_mnist  # noqa: E402
import pyps.data  # noqa: E402
import pyps.torch  # noqa: E402

# ps_server's defaults: L2 on the weights, none on the biases.
L2 = 1e-4


class ParameterServer:
    """θ in one process; apply-and-read under a lock (async SGD)."""

    def __init__(self, lr, seed):
        model = fashion_mnist.Mlp(784, 10, seed)
        self.params = {n: p.detach().clone()
                       for n, p in model.named_parameters()}
        self.lr = lr
        self.samples = 0
        self.lock = threading.Lock()

    def push_pull(self, grads, batch_size):
        with self.lock:
            for name, grad in grads.items():
                theta = self.params[name]
                if not name.endswith("bias"):
                    grad = grad + L2 * theta
                theta.sub_(self.lr * grad)
            self.samples += batch_size
            return {n: p.clone() for n, p in self.params.items()}

    def pull(self):
        with self.lock:
            return {n: p.clone() for n, p in self.params.items()}, self.samples


_server = None


def _push_pull(grads, batch_size):
    return _server.push_pull(grads, batch_size)


def _pull():
    return _server.pull()


def _run_rpc(rank, world, port, flags, results):
    global _server
    pyps.torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      TP_SOCKET_IFNAME="lo")
    options = rpc.TensorPipeRpcBackendOptions(num_worker_threads=8,
                                              rpc_timeout=120)
    if rank == 0:
        _server = ParameterServer(flags.lr, flags.seed)
    rpc.init_rpc(f"node{rank}", rank=rank, world_size=world,
                 rpc_backend_options=options)
    if rank > 0:
        _train(rank - 1, world - 1, flags, results)
    rpc.shutdown()


def _train(rank, workers, flags, results):
    (x_train, y_train), (x_test, y_test) = pyps.data.load_fashion_mnist(
        flags.data_dir)
    model = fashion_mnist.Mlp(784, 10, flags.seed)
    params = dict(model.named_parameters())
    mine = pyps.data.shard(len(y_train), rank, workers)
    batch = flags.batch_size
    steps_per_epoch = -(-(len(y_train) // workers) // batch)

    def load(theta):
        with torch.no_grad():
            for name, value in theta.items():
                params[name].copy_(value)
    theta, _ = rpc.rpc_sync("node0", _pull)
    load(theta)
    start = time.monotonic()
    reached = None
    next_eval = flags.eval_every
    for step in range(steps_per_epoch * flags.epochs):
        epoch, in_epoch = divmod(step, steps_per_epoch)
        if in_epoch == 0:
            order = pyps.data.epoch_order(mine, flags.seed, rank, epoch)
        if rank == 0 and step / steps_per_epoch >= next_eval:
            next_eval += flags.eval_every
            accuracy, _ = fashion_mnist.evaluate(model, x_test, y_test)
            if reached is None and accuracy >= flags.target:
                reached = time.monotonic() - start
        rows = order[in_epoch * batch:(in_epoch + 1) * batch]
        F.cross_entropy(model(torch.from_numpy(x_train[rows])),
                        torch.from_numpy(y_train[rows])).backward()
        grads = {n: p.grad for n, p in params.items()}
        load(rpc.rpc_sync("node0", _push_pull, args=(grads, len(rows))))
        for p in params.values():
            p.grad = None
    if rank == 0:
        elapsed = time.monotonic() - start
        _, samples = rpc.rpc_sync("node0", _pull)
        accuracy, _ = fashion_mnist.evaluate(model, x_test, y_test)
        results.put({"system": "torch_rpc", "samples_per_s":
                     round(samples / elapsed, 1), "time_s": round(elapsed, 2),
                     "time_to_target_s": reached and round(reached, 2),
                     "final_test_accuracy": round(accuracy, 4)})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torch_rpc(flags):
    results = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_run_rpc, args=(3, free_port(), flags, results), nprocs=3,
             join=True)
    return results.get()


def run_pyps(flags):
    """2 ps_server shards and 2 example workers, started and stopped here."""
    bin_dir = os.path.join(flags.build, "bin")
    scratch = tempfile.TemporaryDirectory(prefix="pyps_bench_")
    work = scratch.name
    servers, addresses = [], []
    try:
        for shard in range(2):
            port_file = os.path.join(work, f"port{shard}")
            servers.append(subprocess.Popen(
                [f"{bin_dir}/ps_server", "--listen=127.0.0.1:0",
                 f"--port_file={port_file}", f"--shard_index={shard}",
                 "--num_shards=2", "--num_workers=2", "--mode=async",
                 f"--lr={flags.lr}", "--log_level=warn"]))
            give_up = time.monotonic() + 30
            while not (os.path.exists(port_file) and
                       open(port_file).read().strip()):
                if time.monotonic() > give_up:
                    raise SystemExit("ps_server did not start in 30 s")
                time.sleep(0.05)
            addresses.append(f"127.0.0.1:{open(port_file).read().strip()}")
        metrics = os.path.join(work, "metrics.jsonl")
        env = dict(os.environ, PYTHONPATH=os.path.join(flags.build, "python"))
        workers = [subprocess.Popen(
            [sys.executable, EXAMPLE, f"--servers={','.join(addresses)}",
             f"--rank={rank}", "--num_workers=2", "--model=mlp",
             f"--batch_size={flags.batch_size}", f"--epochs={flags.epochs}",
             f"--seed={flags.seed}", f"--eval_every={flags.eval_every}",
             f"--data_dir={flags.data_dir}", "--log_level=warning",
             f"--metrics_out={metrics}"], env=env) for rank in range(2)]
        for worker in workers:
            if worker.wait(3600) != 0:
                raise SystemExit("a pyps worker failed")
        with open(metrics) as f:
            lines = [json.loads(line) for line in f]
        reached = next((line["time_s"] for line in lines
                        if line["test_accuracy"] >= flags.target), None)
        last = lines[-1]
        return {"system": "pyps", "samples_per_s": last["samples_per_s"],
                "time_s": last["time_s"], "time_to_target_s": reached,
                "final_test_accuracy": last["test_accuracy"]}
    finally:
        for server in servers:
            server.kill()
            server.wait()
        scratch.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build", default="build")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval_every", type=float, default=0.25)
    parser.add_argument("--target", type=float, default=0.86)
    parser.add_argument("--data_dir", default=pyps.data.FASHION_MNIST_DIR)
    parser.add_argument("--only", choices=["pyps", "torch_rpc"])
    flags = parser.parse_args()
    rows = []
    for name, run in (("pyps", run_pyps), ("torch_rpc", run_torch_rpc)):
        if flags.only in (None, name):
            rows.append(with_cpu_seconds(run, flags))
            print(json.dumps(rows[-1]), flush=True)
    if len(rows) == 2 and rows[1]["samples_per_s"]:
        pyps_row, torch_row = rows
        # A worker that spent no CPU outside forward and backward would
        # still pay this for the run's samples.
        compute_s = compute_cpu_s_per_sample(flags) * 60000 * flags.epochs
        print(json.dumps({
            "pyps_over_torch_rpc_samples_per_s": round(
                pyps_row["samples_per_s"] / torch_row["samples_per_s"], 2),
            "torch_rpc_over_pyps_cpu_s": round(
                torch_row["cpu_s"] / pyps_row["cpu_s"], 2),
            "forward_backward_cpu_s": round(compute_s, 1),
            "torch_rpc_cpu_s_over_forward_backward": round(
                torch_row["cpu_s"] / compute_s, 2)}))


def compute_cpu_s_per_sample(flags, steps=500):
    """CPU seconds of the MLP's forward and backward alone, per sample, in
    this process (one thread, as the workers run)."""
    pyps.torch.set_num_threads(1)
    (x, y), _ = pyps.data.load_fashion_mnist(flags.data_dir)
    model = fashion_mnist.Mlp(784, 10, flags.seed)
    order = pyps.data.epoch_order(range(len(y)), flags.seed, 0, 0)
    batch = flags.batch_size
    start = time.process_time()
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        F.cross_entropy(model(torch.from_numpy(x[rows])),
                        torch.from_numpy(y[rows])).backward()
        model.zero_grad(set_to_none=True)
    return (time.process_time() - start) / (steps * batch)


def with_cpu_seconds(run, flags):
    """run(flags)'s row plus the CPU time of the processes it started and
    reaped (user + system)."""
    def children():
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime
    before = children()
    row = run(flags)
    row["cpu_s"] = round(children() - before, 1)
    return row


if __name__ == "__main__":
    main()
