"""A pyps worker that pushes until it is stopped: the process the lease and
signal tests pause, stop and kill. argv: SERVERS WORKER_ID NUM_WORKERS."""

import sys

import numpy as np

import pyps


def main():
    servers, worker_id, num_workers = sys.argv[1], int(sys.argv[2]), int(
        sys.argv[3])
    client = pyps.Client(servers, worker_id, num_workers=num_workers,
                         rpc_deadline=2.0, max_retry_time=30.0)
    client.init({"w": np.zeros(8, np.float32)})
    client.pull()
    print("ready", flush=True)
    zero = {"w": np.zeros(8, np.float32)}
    while True:
        client.push_pull(zero, 1)


if __name__ == "__main__":
    main()
