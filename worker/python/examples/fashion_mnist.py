#!/usr/bin/env python3
"""Trains on Fashion-MNIST (or any .npz) as a worker of the parameter
server, in PyTorch: ps_worker's flags, data split and metrics lines, so C++
and Python workers can share a job.

  --model=softmax|mlp   exactly ps_worker's tensors (names, shapes,
                        exemptions, key order) and seeded initial values
  --model=cnn           two conv layers and a linear layer

Example: python3 fashion_mnist.py --servers=127.0.0.1:50051 --model=cnn
"""

import argparse
import json
import logging
import os
import re
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import pyps
import pyps.data
import pyps.torch

log = logging.getLogger("fashion_mnist")


class Softmax(torch.nn.Module):
    """worker/model.cc's softmax: logits = x W + b."""

    def __init__(self, inputs, classes, seed):
        super().__init__()
        # The loss is convex: small weights only break ties. Every value,
        # bias included, from one stream, as ps_worker draws them.
        values = pyps.data.Mt19937_64(seed).uniform(
            np.float32(1) / np.sqrt(np.float32(inputs)),
            inputs * classes + classes)
        self.register_parameter("softmax/weights", torch.nn.Parameter(
            torch.from_numpy(values[:inputs * classes].reshape(inputs,
                                                              classes))))
        self.register_parameter("softmax/bias", torch.nn.Parameter(
            torch.from_numpy(values[inputs * classes:])))

    def forward(self, x):
        p = dict(self.named_parameters())
        return x @ p["softmax/weights"] + p["softmax/bias"]


def glorot_limit(fan_in, fan_out):
    return np.float32(np.sqrt(6.0 / (fan_in + fan_out)))


class Mlp(torch.nn.Module):
    """worker/model.cc's MLP: inputs -> 128 ReLU -> classes."""
    HIDDEN = 128

    def __init__(self, inputs, classes, seed):
        super().__init__()
        draw = pyps.data.Mt19937_64(seed)
        fc1 = draw.uniform(glorot_limit(inputs, self.HIDDEN),
                           inputs * self.HIDDEN)
        fc2 = draw.uniform(glorot_limit(self.HIDDEN, classes),
                           self.HIDDEN * classes)
        for name, value in [
                ("mlp/fc1/weights", fc1.reshape(inputs, self.HIDDEN)),
                ("mlp/fc1/bias", np.zeros(self.HIDDEN, np.float32)),
                ("mlp/fc2/weights", fc2.reshape(self.HIDDEN, classes)),
                ("mlp/fc2/bias", np.zeros(classes, np.float32))]:
            self.register_parameter(
                name, torch.nn.Parameter(torch.from_numpy(value)))

    def forward(self, x):
        p = dict(self.named_parameters())
        hidden = torch.relu(x @ p["mlp/fc1/weights"] + p["mlp/fc1/bias"])
        return hidden @ p["mlp/fc2/weights"] + p["mlp/fc2/bias"]


class Cnn(torch.nn.Module):
    """Two 3x3 conv layers (32 and 64 channels, each ReLU and 2x2 max-pool)
    and a linear layer: a model ps_worker does not have. Inputs are
    standardised first (Fashion-MNIST's pixel mean and deviation), which
    plain SGD needs to converge in few epochs."""
    MEAN, STD = 0.2860, 0.3530

    def __init__(self, inputs, classes, seed):
        super().__init__()
        side = int(round(np.sqrt(inputs)))
        if side * side != inputs:
            raise SystemExit(f"--model=cnn needs square images; rows of "
                             f"{inputs} values are not")
        self.side = side
        torch.manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64 * (side // 4) ** 2, classes)

    def forward(self, x):
        x = (x.view(-1, 1, self.side, self.side) - self.MEAN) / self.STD
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


MODELS = {"softmax": Softmax, "mlp": Mlp, "cnn": Cnn}


def duration(text):
    """Seconds from ps_worker's duration syntax: 30s, 500ms, 2m, 1.5s."""
    match = re.fullmatch(r"([0-9.]+)(ms|s|m|h)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration such "
                                         "as 30s or 500ms")
    scale = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    return float(match.group(1)) * scale


def expand_flagfiles(argv):
    """absl's --flagfile=FILE (one flag a line, # comments), so the
    example shares ps_worker's flagfile (a Kubernetes ConfigMap, say)."""
    expanded = []
    for arg in argv:
        if not arg.startswith("--flagfile="):
            expanded.append(arg)
            continue
        path = arg.split("=", 1)[1]
        try:
            with open(path) as f:
                lines = [line.strip() for line in f]
        except OSError as error:
            raise SystemExit(f"--flagfile={path}: {error.strerror}")
        expanded += expand_flagfiles(
            [line for line in lines if line and not line.startswith("#")])
    return expanded


def parse_flags(argv):
    argv = expand_flagfiles(argv)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--servers", required=True,
                        help="Comma-separated host:port of every server, in "
                        "shard order.")
    parser.add_argument("--rank", type=int, default=-1,
                        help="This worker's rank in [0, num_workers). "
                        "Default: $JOB_COMPLETION_INDEX, or 0 with one "
                        "worker.")
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--model", choices=sorted(MODELS), default="softmax")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data_dir", default=pyps.data.FASHION_MNIST_DIR,
                        help="Directory holding Fashion-MNIST's gzip IDX "
                        "files.")
    # ps_local gives every worker program ps_worker's --data_format.
    parser.add_argument("--data_format", choices=["idx"], default="idx",
                        help="ps_worker's flag: idx (--data_dir's files) is "
                        "the only format here; --train takes a .npz.")
    parser.add_argument("--train", help="A .npz (x, y) to train on instead "
                        "of --data_dir's.")
    parser.add_argument("--test", help="A .npz (x, y) to evaluate on "
                        "(needed with --train).")
    parser.add_argument("--eval_every", type=float, default=0.25,
                        help="Rank 0 evaluates every this fraction of an "
                        "epoch.")
    parser.add_argument("--metrics_out", default="",
                        help="Rank 0 appends one JSON line per evaluation.")
    parser.add_argument("--rpc_deadline", type=duration, default=30.0)
    parser.add_argument("--max_retry_time", type=duration, default=120.0)
    parser.add_argument("--stop_grace", type=duration, default=5.0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (ps_worker computes on "
                        "one).")
    parser.add_argument("--tls_ca", help="PEM CA of the servers' "
                        "certificates: talk TLS (as ps_worker's flag).")
    parser.add_argument("--tls_cert", help="This worker's certificate (PEM), "
                        "for servers with --tls_client_ca.")
    parser.add_argument("--tls_key", help="The private key of --tls_cert.")
    parser.add_argument("--auth_token_file", help="A file holding the "
                        "servers' token (needs --tls_ca).")
    parser.add_argument("--log_level", default="info")
    flags = parser.parse_args(argv)
    if flags.rank < 0:
        index = os.environ.get("JOB_COMPLETION_INDEX")
        if index is not None:
            flags.rank = int(index)
        elif flags.num_workers == 1:
            flags.rank = 0
        else:
            parser.error("--rank is required with --num_workers > 1 (or "
                         "$JOB_COMPLETION_INDEX)")
    if not 0 <= flags.rank < flags.num_workers:
        parser.error(f"--rank={flags.rank} must be below "
                     f"--num_workers={flags.num_workers}")
    for name in ("batch_size", "epochs"):
        if getattr(flags, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if not flags.eval_every > 0:
        parser.error("--eval_every must be > 0")
    if (flags.train is None) != (flags.test is None):
        parser.error("--train and --test go together")
    return flags


def load(flags):
    if flags.train:
        return pyps.data.load_npz(flags.train), pyps.data.load_npz(
            flags.test)
    return pyps.data.load_fashion_mnist(flags.data_dir)


def evaluate(model, x, y):
    with torch.no_grad():
        loss, correct = 0.0, 0
        for begin in range(0, len(y), 1000):
            logits = model(torch.from_numpy(x[begin:begin + 1000]))
            labels = torch.from_numpy(y[begin:begin + 1000])
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
    return correct / len(y), loss / len(y)


def main(argv):
    flags = parse_flags(argv)
    logging.basicConfig(
        level=flags.log_level.upper(),
        format="%(asctime)s %(levelname).1s fashion_mnist %(message)s")
    pyps.torch.set_num_threads(flags.threads)
    (x_train, y_train), (x_test, y_test) = load(flags)
    classes = int(max(y_train.max(), y_test.max())) + 1
    model = MODELS[flags.model](x_train.shape[1], classes, flags.seed)
    rank, workers, batch = flags.rank, flags.num_workers, flags.batch_size
    smallest_shard = len(y_train) // workers
    if smallest_shard < batch:
        raise SystemExit(f"each worker's shard holds {smallest_shard} "
                         f"examples, fewer than one batch of "
                         f"--batch_size={batch}")

    try:
        client = pyps.Client(flags.servers, rank, num_workers=workers,
                             rpc_deadline=flags.rpc_deadline,
                             max_retry_time=flags.max_retry_time,
                             stop_grace=flags.stop_grace,
                             tls_ca=flags.tls_ca, tls_cert=flags.tls_cert,
                             tls_key=flags.tls_key,
                             auth_token_file=flags.auth_token_file)
    except ValueError as bad:
        raise SystemExit(f"cannot start: {bad}")
    except pyps.Rejected as refused:
        raise SystemExit(f"cannot start: {refused}")
    with client:
        if client.job_complete:
            return 0
        worker = pyps.torch.Worker(model, client)
        try:
            info = worker.init()
        except pyps.Rejected as refused:
            raise SystemExit(f"cannot start: {refused}")
        mine = pyps.data.shard(len(y_train), rank, workers)
        steps_per_epoch = -(-smallest_shard // batch)
        total_steps = steps_per_epoch * flags.epochs
        first_step = min(total_steps, client.step)
        log.info("worker %d/%d: %s mode, examples [%d, %d), %d steps of %d "
                 "per epoch, %d epochs, %d server shards, starting at step "
                 "%d", rank, workers, info.mode, mine.start, mine.stop,
                 steps_per_epoch, batch, flags.epochs, client.num_shards,
                 first_step)
        worker.pull()
        samples_at_start = client.samples_applied
        start = time.monotonic()
        next_eval = flags.eval_every
        while first_step / steps_per_epoch >= next_eval:
            next_eval += flags.eval_every
        loss_sum, loss_count, longest_step = 0.0, 0, 0.0

        def report(step):
            accuracy, test_loss = evaluate(model, x_test, y_test)
            elapsed = time.monotonic() - start
            samples = client.samples_applied
            line = {
                "time_s": round(elapsed, 3),
                "epoch": round(samples / len(y_train), 4), "step": step,
                "version": client.version,
                "test_accuracy": round(accuracy, 4),
                "test_loss": round(test_loss, 5),
                "train_loss": round(loss_sum / max(loss_count, 1), 5),
                "samples_per_s": round(
                    max(samples - samples_at_start, 0) / elapsed, 1)
                if elapsed > 0 else 0.0,
                "samples": samples, "model": flags.model,
                "mode": client.mode, "workers": workers,
                "servers": client.num_shards,
                "max_step_s": round(longest_step, 4),
                "push_bytes_per_step": round(
                    client.push_request_bytes / client.pushes, 1)
                if client.pushes else 0.0}
            log.info("epoch %.2f step %d test accuracy %.4f loss %.4f "
                     "(%.0f samples/s)", line["epoch"], step, accuracy,
                     test_loss, line["samples_per_s"])
            if flags.metrics_out:
                with open(flags.metrics_out, "a") as out:
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")

        order = None
        step_start = time.monotonic()
        for step in range(first_step, total_steps):
            epoch, in_epoch = divmod(step, steps_per_epoch)
            if in_epoch == 0 or order is None:
                order = pyps.data.epoch_order(mine, flags.seed, rank, epoch)
            if rank == 0 and step / steps_per_epoch >= next_eval:
                report(step)
                loss_sum, loss_count, longest_step = 0.0, 0, 0.0
                while step / steps_per_epoch >= next_eval:
                    next_eval += flags.eval_every
                step_start = time.monotonic()
            rows = order[in_epoch * batch:(in_epoch + 1) * batch]
            loss = F.cross_entropy(model(torch.from_numpy(x_train[rows])),
                                   torch.from_numpy(y_train[rows]))
            loss.backward()
            loss_sum += loss.item()
            loss_count += 1
            # The last step only pushes, as ps_worker's does: in sync mode
            # no round follows it to pull.
            worker.step(len(rows), pull=step + 1 < total_steps)
            now = time.monotonic()
            longest_step = max(longest_step, now - step_start)
            step_start = now
        client.leave(finished=True)
        counts = client.push_counts
        log.info("worker %d finished: %d shard pushes applied or accepted, "
                 "%d stale, %d duplicate, %d after re-registering", rank,
                 counts.applied_or_accepted, counts.stale, counts.duplicate,
                 counts.reregistered)
        if rank != 0:
            return 0
        # The final θ, once every other worker finished (bounded): a
        # client that left may still read.
        client.wait_for_other_workers(workers, flags.max_retry_time)
        worker.pull(min_version=0)
        report(total_steps)
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
