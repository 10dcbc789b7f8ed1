#!/usr/bin/env python3
"""Sparse logistic regression in PyTorch on LIBSVM data (ps_datagen ctr's,
say), its weights a pyps table: each step pulls only the rows of the
batch's feature ids, and pushes only their gradient rows.

    p(click) = σ(bias + Σ_features w[id]·value)

`w` is the table "weights" (dim 1, keyed by the raw uint64 feature ids, its
optimizer --optimizer); `bias` a dense tensor exempt from regularization.
The model is torch's embedding_bag over the batch's distinct ids.

Example:
  ps_datagen ctr --rows=100k --out=/tmp/ctr
  ps_server --listen=127.0.0.1:50051 --mode=async --lr=0.1 &
  python3 sparse_logreg.py --servers=127.0.0.1:50051 \\
      --train=/tmp/ctr/train.libsvm --test=/tmp/ctr/test.libsvm
"""

import argparse
import json
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

import pyps

TABLE = "weights"


class Libsvm:
    """Rows of `label id[:value] ...` as CSR: labels (0 or 1), and row r's
    features at [offsets[r], offsets[r + 1]) of ids (uint64) and values."""

    def __init__(self, path):
        labels, ids, values, offsets = [], [], [], [0]
        with open(path) as f:
            for number, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    label = float(fields[0])
                    for feature in fields[1:]:
                        key, _, value = feature.partition(":")
                        ids.append(int(key))
                        values.append(float(value) if value else 1.0)
                except ValueError as error:
                    raise SystemExit(f"{path}:{number}: not LIBSVM "
                                     f"({error})") from None
                labels.append(1.0 if label > 0 else 0.0)
                offsets.append(len(ids))
        self.labels = np.array(labels, np.float32)
        self.ids = np.array(ids, np.uint64)
        self.values = np.array(values, np.float32)
        self.offsets = np.array(offsets, np.int64)

    def __len__(self):
        return len(self.labels)

    def batch(self, rows):
        """The rows' distinct ids, and, per feature, the index of its id
        among them, with per-row offsets into the features."""
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)])
        unique, slots = np.unique(self.ids[take], return_inverse=True)
        offsets = np.concatenate([[0], np.cumsum(ends - starts)[:-1]])
        return unique, slots, self.values[take], offsets, self.labels[rows]


def logits(weights, bias, slots, values, offsets):
    """bias + Σ w[id]·value per row, as torch's embedding_bag sums them."""
    return bias + F.embedding_bag(
        torch.from_numpy(slots.astype(np.int64)), weights.view(-1, 1),
        torch.from_numpy(offsets.astype(np.int64)),
        mode="sum", per_sample_weights=torch.from_numpy(values)).view(-1)


def auc(scores, labels):
    """The probability a random positive scores above a random negative
    (ties count half): the Mann-Whitney statistic."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks over ties.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    positives = labels > 0
    n_pos, n_neg = positives.sum(), (~positives).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) /
                 (n_pos * n_neg))


def evaluate(client, data):
    """test_auc and test_logloss of the servers' θ on `data`."""
    rows = np.arange(len(data))
    unique, slots, values, offsets, labels = data.batch(rows)
    theta, weights = client.pull_sparse(TABLE, unique, min_version=0,
                                        dense=True)
    with torch.no_grad():
        z = logits(torch.from_numpy(weights[:, 0]),
                   torch.from_numpy(theta["bias"]), slots, values,
                   offsets).numpy()
    p = np.clip(1.0 / (1.0 + np.exp(-z.astype(np.float64))), 1e-7, 1 - 1e-7)
    logloss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    return auc(z, labels), float(logloss)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", required=True,
                        help="host:port of every server, in shard order")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--train", required=True, help="LIBSVM file")
    parser.add_argument("--test", required=True, help="LIBSVM file")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--max_steps", type=int, default=0,
                        help="stop after this many steps (0: every batch)")
    parser.add_argument("--optimizer", default="adagrad",
                        help="the table's, in ps_server's --optimizer syntax "
                        "(empty: the servers' flag)")
    parser.add_argument("--model_seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1,
                        help="shuffles the training rows")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")

    train, test = Libsvm(args.train), Libsvm(args.test)
    # This worker's rows: every num_workers-th, from its rank.
    mine = np.arange(args.rank, len(train), args.num_workers)
    rng = np.random.default_rng(args.seed + args.rank)
    batches = [order[i:i + args.batch_size]
               for order in (rng.permutation(mine) for _ in range(args.epochs))
               for i in range(0, len(order), args.batch_size)]
    if args.max_steps:
        batches = batches[:args.max_steps]

    with pyps.Client(args.servers, args.rank,
                     num_workers=args.num_workers) as client:
        client.init({"bias": np.zeros(1, np.float32)},
                    exempt_from_regularization={"bias"},
                    tables=[pyps.Table(TABLE, 1, optimizer=args.optimizer)],
                    model_seed=args.model_seed)
        started = time.monotonic()
        batch = train.batch(batches[0])
        theta, weights = client.pull_sparse(TABLE, batch[0], dense=True)
        for step in range(len(batches)):
            unique, slots, values, offsets, labels = batch
            w = torch.from_numpy(weights[:, 0]).requires_grad_()
            b = torch.from_numpy(theta["bias"]).requires_grad_()
            loss = F.binary_cross_entropy_with_logits(
                logits(w, b, slots, values, offsets),
                torch.from_numpy(labels))
            loss.backward()
            pushed = {TABLE: (unique, w.grad.numpy().reshape(-1, 1))}
            grads = {"bias": b.grad.numpy()}
            if step + 1 == len(batches):
                client.push_sparse(pushed, batch_size=len(labels),
                                   grads=grads)
                break
            batch = train.batch(batches[step + 1])
            # This batch's gradient out, the next batch's rows back.
            theta, rows = client.push_pull_sparse(
                pushed, len(labels), {TABLE: batch[0]}, grads=grads,
                dense=True)
            weights = rows[TABLE]
        seconds = time.monotonic() - started
        test_auc, test_logloss = evaluate(client, test)
        examples = sum(len(b) for b in batches)
        print(json.dumps({"rank": args.rank, "steps": len(batches),
                          "examples_per_second": round(examples / seconds),
                          "test_auc": round(test_auc, 6),
                          "test_logloss": round(test_logloss, 6)}),
              flush=True)


if __name__ == "__main__":
    main()
