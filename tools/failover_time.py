#!/usr/bin/env python3
"""Failover time of a replicated shard, over many kills (issue 16).

Each trial starts one shard on --replicas ps_server replicas (2 by default;
3 or more elect the new primary by votes, as do 2 with --witness, a third
replica that holds no θ) and one ps_worker training softmax
asynchronously against them (--servers=p|b...), lets it train, then kills
the primary (kill -9) or stops it (SIGSTOP), and measures the time from the
signal to the first push the new primary acknowledges (its log line "first
push acknowledged", written once per takeover). Prints every trial and the
median, p90 and max.

  tools/failover_time.py --bin build/bin --fault kill --trials 20
  tools/failover_time.py --bin build/bin --fault stop --trials 20
  tools/failover_time.py --bin build/bin --fault kill --trials 20 --replicas 3
  tools/failover_time.py --bin build/bin --fault kill --trials 20 --witness

Everything runs on 127.0.0.1 with ports the servers pick; the logs stay in
--dir (a fresh temporary directory by default).
"""
import argparse
import datetime
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

FIRST_PUSH = re.compile(
    r"^(\S+) \S+ ps_server replication: replica \d+ first push acknowledged",
    re.M)


def wait_for(condition, timeout, what):
    give_up = time.time() + timeout
    while time.time() < give_up:
        value = condition()
        if value:
            return value
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def start_server(args, directory, index, peers, witness=False):
    port_file = os.path.join(directory, f"replica-{index}.port")
    log = open(os.path.join(directory, f"replica-{index}.log"), "w")
    process = subprocess.Popen(
        [os.path.join(args.bin, "ps_server"), "--listen=127.0.0.1:0",
         f"--port_file={port_file}", "--num_workers=1", "--mode=async",
         f"--replicas={len(peers)}", f"--replica_index={index}",
         f"--replica_peers={','.join(peers)}",
         f"--failover_timeout={args.failover_timeout}"] +
        (["--replica_witness"] if witness else []),
        stdout=log, stderr=subprocess.STDOUT)
    port = wait_for(lambda: read(port_file).strip(), 30, f"{port_file}")
    return process, f"127.0.0.1:{port}"


def trial(args, directory):
    servers = args.replicas + (1 if args.witness else 0)
    peers = ["127.0.0.1:0"] * servers
    processes = []
    for index in range(servers):
        process, peers[index] = start_server(args, directory, index, peers,
                                             witness=index >= args.replicas)
        processes.append(process)
    primary = processes[0]
    backup_logs = [os.path.join(directory, f"replica-{index}.log")
                   for index in range(1, servers)]
    worker_log_path = os.path.join(directory, "worker.log")
    try:
        for log in backup_logs:
            wait_for(lambda: "joined primary" in read(log), 30,
                     f"{log} to join")
        worker_log = open(worker_log_path, "w")
        processes.append(subprocess.Popen(
            [os.path.join(args.bin, "ps_worker"),
             f"--servers={'|'.join(peers[:args.replicas])}", "--rank=0",
             "--num_workers=1", "--model=softmax", "--epochs=100"],
            stdout=worker_log, stderr=subprocess.STDOUT))
        wait_for(lambda: "starting at step" in read(worker_log_path), 60,
                 "the worker to start training")
        time.sleep(args.train_before)  # training under way
        killed_at = time.time()
        os.kill(primary.pid,
                signal.SIGKILL if args.fault == "kill" else signal.SIGSTOP)
        stamp = wait_for(
            lambda: next(filter(None, (FIRST_PUSH.search(read(log))
                                       for log in backup_logs)), None),
            30, "the new primary's first acknowledged push")
        acknowledged = datetime.datetime.fromisoformat(
            stamp.group(1)).replace(tzinfo=datetime.timezone.utc).timestamp()
        return acknowledged - killed_at
    finally:
        if args.fault == "stop":
            os.kill(primary.pid, signal.SIGCONT)
        for p in processes:
            p.kill()
            p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="build/bin",
                        help="where ps_server and ps_worker are")
    parser.add_argument("--fault", choices=["kill", "stop"], default="kill",
                        help="kill -9 or SIGSTOP the primary")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=2,
                        help="replicas of the shard (3 or more: votes)")
    parser.add_argument("--witness", action="store_true",
                        help="one more replica, a witness (ps_server "
                        "--replica_witness)")
    parser.add_argument("--failover_timeout", default="300ms",
                        help="ps_server --failover_timeout")
    parser.add_argument("--train_before", type=float, default=1.0,
                        help="seconds of training before the fault")
    parser.add_argument("--dir", default="",
                        help="where the logs go (default: a fresh temp dir)")
    args = parser.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="failover_time_")
    times = []
    for n in range(args.trials):
        directory = os.path.join(root, f"trial-{n}")
        os.makedirs(directory, exist_ok=True)
        seconds = trial(args, directory)
        times.append(seconds)
        print(f"trial {n}: {seconds:.3f} s", flush=True)
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    print(f"{args.fault}: {len(times)} trials, median "
          f"{statistics.median(times):.3f} s, p90 {p90:.3f} s, max "
          f"{times[-1]:.3f} s ({args.replicas} replicas"
          f"{' and a witness' if args.witness else ''}, failover_timeout "
          f"{args.failover_timeout}; "
          f"logs in {root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
