"""Real ps_server (and ps_worker) processes on 127.0.0.1 for the pyps tests.

ctest sets PS_BIN_DIR (the build's bin/) and PYTHONPATH (<build>/python).
Every process is started here, on a free port, and stopped by its pid.
"""

import os
import signal
import subprocess
import time

import grpc
import pytest

from ps.v1 import parameter_server_pb2 as pb
from ps.v1 import parameter_server_pb2_grpc as pb_grpc

BIN_DIR = os.environ.get("PS_BIN_DIR", "build/bin")


def wait_for(condition, timeout, what):
    """Polls `condition` until it is true; fails the test after `timeout`
    seconds naming `what`."""
    give_up = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > give_up:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Process:
    """A daemon of the test, its output in a log file."""

    def __init__(self, argv, log_path, env=None):
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
        self.pid = self.popen.pid

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def signal(self, number):
        if self.popen.poll() is None:
            os.kill(self.pid, number)

    def wait(self, timeout):
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.argv[0]} (pid {self.pid}) still runs after "
                        f"{timeout}s:\n{self.log()[-3000:]}")

    def stop(self):
        """SIGKILL if still running, then reap."""
        if self.popen.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            os.kill(self.pid, signal.SIGCONT)  # in case it was stopped
        self.popen.wait(30)


class Servers:
    """The server shards of one job."""

    def __init__(self, tmp_path, processes):
        self.tmp_path = tmp_path
        self._processes = processes
        self.shards = []   # Process per shard
        self.ports = []
        self.flags = []

    @property
    def addresses(self):
        return [f"127.0.0.1:{p}" for p in self.ports]

    def start(self, num_shards=1, *flags):
        self.flags = list(flags)
        for index in range(num_shards):
            self.shards.append(None)
            self.ports.append(0)
            self.restart(index, num_shards)
        return self

    def restart(self, index, num_shards=None):
        """Starts shard `index` (again: on the port it had)."""
        num_shards = num_shards or len(self.shards)
        process, self.ports[index] = start_ps_server(
            self._processes, self.tmp_path, f"port{index}", f"server{index}",
            [f"--shard_index={index}", f"--num_shards={num_shards}",
             *self.flags],
            port=self.ports[index], what=f"shard {index}")
        self.shards[index] = process
        return process


def start_ps_server(processes, tmp_path, port_name, log_name, flags, port=0,
                    what="ps_server"):
    """A ps_server on 127.0.0.1:`port` (0: any) with `flags`, its log
    tmp_path/`log_name`.log; (process, port) once it serves."""
    port_file = tmp_path / port_name
    if port_file.exists():
        port_file.unlink()
    process = Process(
        [f"{BIN_DIR}/ps_server", f"--listen=127.0.0.1:{port}",
         f"--port_file={port_file}", *flags],
        str(tmp_path / f"{log_name}.log"))
    processes.append(process)

    def ready():
        if process.popen.poll() is not None:
            pytest.fail(f"ps_server exited:\n{process.log()[-3000:]}")
        return port_file.exists() and port_file.read_text().strip()
    wait_for(ready, 30, f"{what} to serve")
    return process, int(port_file.read_text())


def server_status(address, timeout=10):
    """The server's ParameterServer.Status."""
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.ParameterServerStub(channel).Status(
            pb.StatusRequest(), timeout=timeout)


def start_replica(tmp_path, processes, index, peers, *flags):
    """Replica `index` (of len(peers)) of the one shard of an async job,
    with `flags` more, and its address once it serves."""
    process, port = start_ps_server(
        processes, tmp_path, f"replica{index}.port", f"replica{index}",
        ["--shard_index=0", "--num_shards=1", "--mode=async", "--lr=0.5",
         "--l2=0", f"--replicas={len(peers)}", f"--replica_index={index}",
         f"--replica_peers={','.join(peers)}", *flags],
        what=f"replica {index}")
    return process, f"127.0.0.1:{port}"


@pytest.fixture
def processes():
    """Every process a test starts; killed by pid at the end."""
    started = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def servers(tmp_path, processes):
    """servers.start(num_shards, *ps_server flags) starts a job's shards."""
    return Servers(tmp_path, processes)


@pytest.fixture
def spawn(processes, tmp_path):
    """spawn(name, argv, env=None): a process of the test, log in tmp_path."""
    def start(name, argv, env=None):
        process = Process(argv, str(tmp_path / f"{name}.log"), env=env)
        processes.append(process)
        return process
    return start


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: trains a whole job (tens of seconds)")
