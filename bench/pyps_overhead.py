#!/usr/bin/env python3
"""Time a pyps step spends outside gRPC, as a share of a whole softmax step
(forward, backward, PushPull) of the Fashion-MNIST example: validation,
conversion, (de)serialisation and copies into the parameters; and the CPU
time a step's PushPull costs the worker process.

Starts one ps_server (async) on 127.0.0.1 and one worker in this process.

  PYTHONPATH=build/python python3 bench/pyps_overhead.py --build=build
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "worker", "python", "examples",
                       "fashion_mnist.py")
sys.path.insert(0, os.path.dirname(EXAMPLE))
import fashion_mnist  # noqa: E402
import pyps  # noqa: E402
import pyps.data  # noqa: E402
import pyps.torch  # noqa: E402


class TimedCall:
    """A gRPC callable that adds the time spent inside it to `total`."""

    def __init__(self, call):
        self.call = call
        self.total = 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.call(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--build", default="build")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--model", default="softmax",
                        choices=sorted(fashion_mnist.MODELS))
    flags = parser.parse_args()
    torch.set_num_threads(1)
    scratch = tempfile.TemporaryDirectory(prefix="pyps_overhead_")
    work = scratch.name
    port_file = os.path.join(work, "port")
    server = subprocess.Popen(
        [os.path.join(flags.build, "bin", "ps_server"), "--listen=127.0.0.1:0",
         f"--port_file={port_file}", "--mode=async", "--log_level=warn"])
    try:
        give_up = time.monotonic() + 30
        while not (os.path.exists(port_file) and open(port_file).read()):
            if time.monotonic() > give_up:
                raise SystemExit("ps_server did not start in 30 s")
            time.sleep(0.05)
        address = f"127.0.0.1:{open(port_file).read().strip()}"
        (x, y), _ = pyps.data.load_fashion_mnist()
        model = fashion_mnist.MODELS[flags.model](784, 10, 1)
        with pyps.Client(address, 0) as client:
            worker = pyps.torch.Worker(model, client)
            worker.init()
            worker.pull()
            timed = TimedCall(client._shards[0].raw["PushPull"])
            client._shards[0].raw["PushPull"] = timed
            order = pyps.data.epoch_order(range(len(y)), 1, 0, 0)
            in_step = step_cpu = 0.0
            start = time.perf_counter()
            for step in range(flags.steps):
                rows = order[(step * 64) % 59968:][:64]
                F.cross_entropy(model(torch.from_numpy(x[rows])),
                                torch.from_numpy(y[rows])).backward()
                before, cpu_before = time.perf_counter(), time.process_time()
                worker.step(len(rows))
                in_step += time.perf_counter() - before
                step_cpu += time.process_time() - cpu_before
            total = time.perf_counter() - start
    finally:
        server.kill()
        server.wait()
        scratch.cleanup()
    outside_grpc = in_step - timed.total
    print(json.dumps({
        "model": flags.model, "steps": flags.steps,
        "step_ms": round(1e3 * total / flags.steps, 3),
        "grpc_ms": round(1e3 * timed.total / flags.steps, 3),
        "pyps_outside_grpc_ms": round(1e3 * outside_grpc / flags.steps, 3),
        # The worker process's CPU (all its threads, gRPC's included) in
        # worker.step: what the client costs a CPU-bound machine.
        "step_cpu_ms": round(1e3 * step_cpu / flags.steps, 3),
        "pyps_outside_grpc_percent_of_step": round(
            100 * outside_grpc / total, 1)}))


if __name__ == "__main__":
    main()
