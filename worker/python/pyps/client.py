"""pyps.Client: a worker of the parameter-server protocol, by the rules of
the C++ client (worker/parameter_client.cc): the same key split, retries,
exactly-once push numbering, leases and consistency modes."""

import concurrent.futures
import dataclasses
import logging
import os
import signal
import threading
import time

import grpc
import numpy as np

from ps.v1 import parameter_server_pb2 as pb
from ps.v1 import parameter_server_pb2_grpc as pb_grpc
from pyps.errors import Error, ModelMismatch, Rejected
from pyps.key_range import balanced_part
from pyps.replica_choice import Replicas
from pyps.retry import RetryPolicy, as_pyps_error, call_with_retry
from pyps.sparse import (checked_keys, checked_rows, checked_tables, routes)
from pyps.status_details import needs_registration

# With a replicated shard, ParameterClient's heartbeat: often, so a stopped
# primary is noticed soon.
_REPLICATED_HEARTBEAT = 0.1

log = logging.getLogger("pyps")

# common/rpc/channel.h's kMaxMessageBytes and CreateChannel's arguments:
# reconnect within a second of a server coming back.
_MAX_MESSAGE_BYTES = 512 << 20
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.dns_min_time_between_resolutions_ms", 500),
]
_SERVICE = "/ps.v1.ParameterServer/"
_MODE_NAMES = {pb.MODE_SYNC: "sync", pb.MODE_ASYNC: "async",
               pb.MODE_SSP: "ssp"}
# float16, float32 and float64 arrays are taken (converted once to float32);
# anything else is a caller's mistake.
_FLOAT_KINDS = "f"
_WIRE_FLOAT = np.dtype("<f4")


@dataclasses.dataclass(frozen=True)
class InitInfo:
    """What the servers said when this worker declared the model."""
    created: bool          # this call created the model on some shard
    mode: str              # "sync", "async" or "ssp", the same on all shards
    expected_workers: int  # the same on all shards
    version: int           # lowest shard version


@dataclasses.dataclass
class PushCounts:
    """What the servers did with this worker's pushes, one count per shard
    push (worker/parameter_client.h's PushCounts)."""
    applied_or_accepted: int = 0
    stale: int = 0          # dropped: the sync round had closed
    duplicate: int = 0      # the server had it before this call sent it
    reregistered: int = 0   # a lease had expired meanwhile


@dataclasses.dataclass
class _SparseBatch:
    """One table's keys (and gradient rows) of a call, checked, with the
    positions of the keys each shard holds."""
    table: str
    dim: int
    keys: np.ndarray
    rows: np.ndarray  # None in a pull
    routes: list      # per shard: positions in keys, in the caller's order


@dataclasses.dataclass
class _Tensor:
    name: str
    shape: tuple
    offset: int  # first key
    size: int


def _as_numpy(value):
    """A CPU torch tensor as the numpy array it shares memory with; anything
    else as it is."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value


def _list_difference(kind, mine, theirs, difference):
    """The first difference between this worker's declarations of a kind
    (tensors, tables) and a server's: one missing on either side, or
    difference(i, mine, there) of a pair; empty when there is none."""
    for i in range(max(len(theirs), len(mine))):
        if i >= len(theirs):
            return f"{kind} '{mine[i].name}' is not declared there"
        if i >= len(mine):
            return (f"it declares {kind} '{theirs[i].name}' that this "
                    "worker does not")
        found = difference(i, mine[i], theirs[i])
        if found:
            return found
    return ""


def _tensor_difference(i, mine, there):
    if (mine.name, list(mine.shape), mine.exempt_from_regularization) != (
            there.name, list(there.shape), there.exempt_from_regularization):
        return (f"tensor {i} is '{there.name}' of shape {list(there.shape)} "
                f"(exempt {there.exempt_from_regularization}) there, "
                f"'{mine.name}' of shape {list(mine.shape)} (exempt "
                f"{mine.exempt_from_regularization}) here")
    for setting in ("optimizer", "lr_schedule"):
        if getattr(mine, setting) != getattr(there, setting):
            return (f"tensor '{mine.name}' has {setting} "
                    f"'{getattr(there, setting)}' there, "
                    f"'{getattr(mine, setting)}' here")
    return ""


def _table_difference(i, mine, there):
    if mine == there:
        return ""
    return (f"table {i} is {_describe_table(there)} there, "
            f"{_describe_table(mine)} here")


def _describe_table(spec):
    return (f"'{spec.name}' (dim {spec.dim}, initializer "
            f"'{spec.initializer}', optimizer '{spec.optimizer}', "
            f"lr_schedule '{spec.lr_schedule}')")


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise ValueError(f"{what}={path}: {error.strerror}") from None


def _credentials(tls_ca, tls_cert, tls_key, auth_token_file):
    """common/rpc/security.h's client side: None for plaintext, else TLS
    credentials checked against tls_ca, with this client's certificate and
    the bearer token when given. A token is never sent in plaintext."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    if tls_ca is None:
        if tls_cert is not None or auth_token_file is not None:
            raise ValueError("tls_cert and auth_token_file need TLS: give "
                             "tls_ca (the CA that signed the servers' "
                             "certificates) too")
        return None
    pems = {name: _read(path, name) for name, path in (
        ("tls_ca", tls_ca), ("tls_cert", tls_cert), ("tls_key", tls_key))
        if path is not None}
    for name, pem in pems.items():
        if b"-----BEGIN " not in pem:
            raise ValueError(f"{name}: not a PEM file (no -----BEGIN line)")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pems["tls_ca"],
        private_key=pems.get("tls_key"),
        certificate_chain=pems.get("tls_cert"))
    if auth_token_file is not None:
        token = _read(auth_token_file, "auth_token_file").decode(
            "ascii", "replace").rstrip()
        if not token:
            raise ValueError(f"auth_token_file={auth_token_file}: the file "
                             "holds no token")
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token))
    return credentials


class _Replica:
    """One server process of a shard: its channel and stubs."""

    def __init__(self, address, credentials):
        self.address = address
        if credentials is None:
            self.channel = grpc.insecure_channel(address,
                                                 options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.secure_channel(address, credentials,
                                               options=_CHANNEL_OPTIONS)
        self.stub = pb_grpc.ParameterServerStub(self.channel)
        # Pull, Push and PushPull as raw bytes: the gradient goes out from
        # the arrays' buffers, θ is read with numpy.frombuffer.
        self.raw = {method: self.channel.unary_unary(_SERVICE + method)
                    for method in ("Pull", "Push", "PushPull")}


class _Shard:
    def __init__(self, index, addresses, credentials):
        self.index = index
        # One, or the shard's replicas (calls follow the primary).
        self.replicas = Replicas(addresses,
                                 lambda a: _Replica(a, credentials))
        self.begin = 0
        self.end = 0
        # From the last answered pull; a sync push names this round.
        self.pulled_version = 0
        self.pulled_samples = 0
        self.pulled_waited_us = 0
        self.pulled = False

    @property
    def address(self):
        """The replica calls go to now."""
        return self.replicas.current.address

    @property
    def stub(self):
        return self.replicas.current.stub


def _varint(value):
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


# Field numbers of the requests that _push_bytes and push_pull frame by hand,
# read from the proto so a renumbered field cannot go out under its old one.
def _field_number(message, field):
    return message.DESCRIPTOR.fields_by_name[field].number


_PUSH_GRADIENT = _field_number(pb.PushRequest, "gradient")
_PUSH_PULL_PUSH = _field_number(pb.PushPullRequest, "push")
_PUSH_PULL_PULL = _field_number(pb.PushPullRequest, "pull")


def _length_delimited(field_number, size):
    """The tag and length of a bytes or message field of `size` bytes."""
    return _varint(field_number << 3 | 2) + _varint(size)


class Client:
    """One worker of a job: registers with every server shard, heartbeats,
    and pulls and pushes θ split over the shards exactly as ps_worker does.

    Use it as a context manager, or call close(): the servers then stop
    counting this worker toward sync rounds at once. SIGTERM and SIGINT
    (when created on the main thread) finish the step in flight, leave, and
    exit with 128+signal, as ps_worker does.

    servers lists the shards in order ("a:1,b:2" or a list), each shard as
    its replicas joined by '|' ("a0:1|a1:1,b0:2|b1:2", ps_worker's
    --servers): calls go to the replica that is the shard's primary and
    follow it through a failover.

    tls_ca, tls_cert, tls_key and auth_token_file are ps_worker's flags of
    those names (PEM files, a file holding the token): TLS to the servers,
    this worker's certificate, and the token sent on every call.
    """

    def __init__(self, servers, worker_id, *, num_workers=1,
                 rpc_deadline=30.0, max_retry_time=120.0, incarnation=0,
                 stop_grace=5.0, handle_signals=True, tls_ca=None,
                 tls_cert=None, tls_key=None, auth_token_file=None):
        if isinstance(servers, str):
            servers = servers.split(",")
        # A shard's replicas joined by '|' (ps_worker's --servers=a0|a1,b0|b1).
        servers = [entry.split("|") for entry in servers]
        if not servers:
            raise ValueError("no servers given")
        for entry in servers:
            for address in entry:
                if ":" not in address:
                    raise ValueError(
                        f"server address '{address}' (in '{'|'.join(entry)}')"
                        " is not host:port; a replicated shard lists "
                        "host:port|...")
        if not 0 <= worker_id < num_workers:
            raise ValueError(f"worker_id={worker_id} must be in "
                             f"[0, num_workers={num_workers})")
        if not stop_grace > 0:
            raise ValueError("stop_grace must be > 0 seconds")
        self.worker_id = worker_id
        self.num_workers = num_workers
        self.retry = RetryPolicy(rpc_deadline=rpc_deadline,
                                 max_retry_time=max_retry_time)
        self.incarnation = incarnation
        self.push_counts = PushCounts()
        # Push and PushPull calls, and the bytes of their requests to every
        # shard (one attempt each): what a step costs on the wire going out
        # (the C++ client keeps them in its PushCounts).
        self.pushes = 0
        self.push_request_bytes = 0
        self._counts_lock = threading.Lock()
        self.job_complete = False
        # The worker's clock: steps pushed, from where a previous process
        # with this worker id stopped.
        self.step = 0
        self._stop_grace = stop_grace
        credentials = _credentials(tls_ca, tls_cert, tls_key,
                                   auth_token_file)
        self._shards = [_Shard(i, a, credentials)
                        for i, a in enumerate(servers)]
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, len(servers) - 1),
            thread_name_prefix="pyps-shard")
        self._tensors = None
        self._tables = {}  # name: pyps.Table, as declared at init()
        self._num_keys = 0
        self._init_version = 0
        self._mode = pb.MODE_UNSPECIFIED
        self._next_seq = 1
        self._stop_heartbeats = threading.Event()
        self._heartbeats = None
        self._left = False
        self._closed = False
        self._registered = False
        self._stop_signal = 0
        self._in_step = False
        self._previous_handlers = {}
        try:
            self._survey_and_register()
        except BaseException:
            self._shutdown()
            raise
        if handle_signals and (threading.current_thread()
                               is threading.main_thread()):
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous_handlers[number] = signal.signal(
                    number, self._on_stop_signal)

    # -- public API -------------------------------------------------------

    @property
    def mode(self):
        """The servers' consistency mode as the latest answer said it."""
        return _MODE_NAMES.get(self._mode, "unknown")

    @property
    def num_shards(self):
        return len(self._shards)

    @property
    def version(self):
        """The lowest shard version of the last pull."""
        return min(s.pulled_version for s in self._shards)

    @property
    def samples_applied(self):
        """Training examples in θ as of the last pull (shard 0's count)."""
        return self._shards[0].pulled_samples

    @property
    def waited_seconds(self):
        """How long the servers held the last pull before answering it (sync:
        for the round to close; ssp: for the slowest worker), the longest
        over the shards; 0.0 when each answered at once. The rest of the
        call was transfer and the servers' work (PullInfo.waited_seconds)."""
        return max(s.pulled_waited_us for s in self._shards) / 1e6

    def init(self, tensors, exempt_from_regularization=(), optimizers=None,
             lr_schedules=None, tables=(), model_seed=0):
        """Declares the model: `tensors` maps names to initial values, in
        key order (the dict's order). `optimizers` and `lr_schedules` map
        some of the names to their own optimizer ("adam(beta1=0.9)") and
        learning-rate schedule ("cosine:1000"), in ps_server's --optimizer
        and --lr_schedule syntax; the others use the server's flags. The
        server refuses text that does not parse (Rejected, naming the
        tensor). `tables` declares sparse tables (pyps.Table; the model may
        have tables only, tensors={}), whose rows start as their
        initializer seeded by `model_seed`, the table's index and the row's
        id. The first declaration wins; one that differs from it raises
        ModelMismatch naming the tensor or table."""
        self._require_registered()
        declared_tables = checked_tables(tables)
        clash = {t.name for t in declared_tables} & set(tensors)
        if clash:
            raise ValueError(f"names used by both a tensor and a table: "
                             f"{sorted(clash)}")
        exempt = set(exempt_from_regularization)
        optimizers = dict(optimizers or {})
        lr_schedules = dict(lr_schedules or {})
        for argument, names in (("exempt_from_regularization", exempt),
                                ("optimizers", set(optimizers)),
                                ("lr_schedules", set(lr_schedules))):
            unknown = names - set(tensors)
            if unknown:
                raise ValueError(f"{argument} names tensors that are not "
                                 f"declared: {sorted(unknown)}")
        declared = []
        offset = 0
        for name, value in tensors.items():
            shape = tuple(int(d) for d in np.shape(value))
            size = int(np.prod(shape, dtype=np.int64))
            declared.append(_Tensor(name, shape, offset, size))
            offset += size
        self._tensors = declared
        self._num_keys = offset
        flat = self._flatten(tensors, "initial value")
        specs = [pb.TensorSpec(name=t.name, shape=t.shape,
                               exempt_from_regularization=t.name in exempt,
                               optimizer=optimizers.get(t.name, ""),
                               lr_schedule=lr_schedules.get(t.name, ""))
                 for t in declared]
        table_specs = [t.to_proto() for t in declared_tables]

        def init_shard(shard):
            shard.begin, shard.end = balanced_part(
                self._num_keys, len(self._shards), shard.index)
            request = pb.InitRequest(
                worker_id=self.worker_id, shard_index=shard.index,
                num_shards=len(self._shards), tensors=specs,
                values=b"".join(self._pieces(flat, shard)),
                tables=table_specs, model_seed=model_seed)
            try:
                return self._call(shard, "Init on",
                                  lambda r, t: r.stub.Init(request, timeout=t))
            except Rejected as refused:
                mismatch = self._model_difference(shard, specs, table_specs)
                if mismatch:
                    raise ModelMismatch(
                        f"server {shard.address} holds another model: "
                        f"{mismatch}") from refused
                raise

        try:
            answers = self._on_every_shard(init_shard)
        except Error as failure:
            self._leave_after_failed_start(failure)
            raise
        first = answers[0]
        for shard, answer in zip(self._shards, answers):
            if (answer.key_begin, answer.key_end) != (shard.begin, shard.end):
                raise Rejected(
                    f"server {shard.address} holds keys [{answer.key_begin}, "
                    f"{answer.key_end}) but this worker expected "
                    f"[{shard.begin}, {shard.end})")
            if (answer.mode != first.mode or
                    answer.expected_workers != first.expected_workers):
                raise Rejected(
                    f"servers disagree: {self._shards[0].address} runs mode "
                    f"{_MODE_NAMES.get(first.mode)} with "
                    f"{first.expected_workers} workers but {shard.address} "
                    f"runs mode {_MODE_NAMES.get(answer.mode)} with "
                    f"{answer.expected_workers} workers")
        self._mode = first.mode
        self._tables = {t.name: t for t in declared_tables}
        self._init_version = min(a.version for a in answers)
        if first.expected_workers != self.num_workers:
            log.warning("the servers were started for %d workers, this "
                        "worker for num_workers=%d", first.expected_workers,
                        self.num_workers)
        return InitInfo(created=any(a.created for a in answers),
                        mode=self.mode,
                        expected_workers=first.expected_workers,
                        version=self._init_version)

    def pull(self, min_version=None):
        """θ as {name: float32 array} once every shard reached min_version
        (sync: by default the next round; ssp: once the slowest live worker
        is within the staleness bound of this worker's clock)."""
        return self._pull_rows(min_version, [])[0]

    def pull_sparse(self, table, keys=None, *, min_version=None,
                    dense=False):
        """The rows of `keys` (uint64 feature ids) of `table`: a
        (len(keys), dim) float32 array in the order of `keys`, a key never
        updated reading as its initial value. Given {table: keys} instead,
        returns {table: rows}. Like pull(), it asks every shard (each for
        its keys, all at once) and waits as pull() waits; dense=True
        returns (θ as pull() returns it, the rows)."""
        single = not isinstance(table, dict)
        wanted = {table: keys} if single else table
        theta, rows = self._pull_rows(
            min_version, self._sparse_batches(wanted, with_rows=False))
        rows = rows[table] if single else rows
        return (theta, rows) if dense else rows

    def push(self, grads, batch_size):
        """Sends the mean gradient of `batch_size` examples, {name: array}
        shaped as declared, computed from the θ last pulled."""
        self._push_rows(grads, batch_size, {})

    def push_sparse(self, table, keys=None, rows=None, *, batch_size,
                    grads=None):
        """Sends the mean gradient rows of `batch_size` examples: `rows`
        ((len(keys), dim), float) for `keys` of `table`, or, given
        {table: (keys, rows)}, of several tables. Rows of a key repeated in
        one push are summed. A model with dense tensors takes their
        gradient `grads` (as push() does) in the same push: one update,
        applied once, all or nothing."""
        pushed = {table: (keys, rows)} if not isinstance(table, dict) \
            else table
        self._push_rows(grads, batch_size, pushed)

    def push_pull(self, grads, batch_size, min_version=None):
        """push(grads, batch_size), then pull(min_version), in one round
        trip per shard; returns θ as pull() does."""
        return self._push_pull_rows(grads, batch_size, {}, min_version, {})[0]

    def push_pull_sparse(self, push, batch_size, pull, *, grads=None,
                         min_version=None, dense=False):
        """push_sparse(push, batch_size=batch_size, grads=grads), then
        pull_sparse(pull, min_version=min_version), in one round trip per
        shard: `push` is {table: (keys, rows)}, `pull` {table: keys} (the
        next batch's, say); returns {table: rows}, or (θ, rows) with
        dense=True."""
        theta, rows = self._push_pull_rows(grads, batch_size, push,
                                           min_version, pull)
        return (theta, rows) if dense else rows

    def wait_for_other_workers(self, num_workers, timeout):
        """Waits until workers 0..num_workers-1 all registered and none is
        live on any shard, at most `timeout` seconds; False on timeout."""
        give_up = time.monotonic() + timeout
        while True:
            answers = self._status_of_every_shard()
            live = max(a.live_workers for a in answers)
            unregistered = max(
                num_workers - min(num_workers, sum(
                    w.worker_id < num_workers for w in a.workers))
                for a in answers)
            if live == 0 and unregistered == 0:
                return True
            if time.monotonic() > give_up:
                log.warning("after %.0fs, %d workers are still live and %d of "
                            "%d never registered", timeout, live,
                            unregistered, num_workers)
                return False
            time.sleep(0.05)  # polling the servers, not synchronising

    def leave(self, finished=False):
        """Leaves the job (FINISHED when every step was pushed, else
        STOPPED: a restart resumes), so sync rounds stop waiting for this
        worker. pull() and wait_for_other_workers() still work."""
        if self._registered and not self._left:
            self._leave(pb.LeaveRequest.FINISHED if finished
                        else pb.LeaveRequest.STOPPED)

    def close(self, finished=False):
        """leave(finished), then releases the channels."""
        try:
            self.leave(finished)
        finally:
            self._shutdown()

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        # A with-block that ran to its end finished its work.
        self.close(finished=kind is None)
        return False

    # -- registration and leases ------------------------------------------

    def _survey_and_register(self):
        answers = self._status_of_every_shard()
        listed = len(self._shards)
        complete = True
        for shard, status in zip(self._shards, answers):
            if status.num_shards != listed:
                raise Rejected(
                    f"servers lists {listed} server{'s' * (listed != 1)} but "
                    f"{shard.address} is shard {status.shard_index} of "
                    f"{status.num_shards}: give every server of the job, in "
                    "shard order")
            if status.shard_index != shard.index:
                raise Rejected(
                    f"servers lists {shard.address} at position {shard.index}"
                    f" but it is shard {status.shard_index} of "
                    f"{status.num_shards}: list the servers in shard order")
            finished = sum(w.finished and w.worker_id < status.expected_workers
                           for w in status.workers)
            complete = (complete and status.initialized and
                        finished == status.expected_workers)
        if complete:
            # Nothing to train: the caller looks at job_complete.
            self.job_complete = True
            log.info("the job is already complete: every worker finished on "
                     "every server; nothing to train")
            return
        if self.incarnation == 0:
            self._choose_incarnation(answers)
        registered = self._on_every_shard(self._register_shard)
        self._registered = True
        self.step = min(r.resume_step for r in registered)
        lease = min(r.lease_timeout_ms for r in registered) / 1000.0
        if any(r.rejoined for r in registered):
            log.info("worker %d rejoined the job (incarnation %d), resuming "
                     "at step %d", self.worker_id, self.incarnation, self.step)
        # Three heartbeats per lease: one lost or late beat costs nothing.
        interval = max(lease / 3, 0.01)
        if any(len(s.replicas.members) > 1 for s in self._shards):
            interval = min(interval, _REPLICATED_HEARTBEAT)
        self._heartbeats = threading.Thread(
            target=self._heartbeat_loop, args=(interval,),
            name="pyps-heartbeats", daemon=True)
        self._heartbeats.start()

    def _choose_incarnation(self, answers):
        # Above every incarnation the servers hold for this id, and above
        # the clock (ParameterClient::ChooseIncarnation).
        known = max((w.incarnation for a in answers for w in a.workers
                     if w.worker_id == self.worker_id), default=0)
        self.incarnation = max(time.time_ns(), known + 1)

    def _register_request(self):
        return pb.RegisterRequest(worker_id=self.worker_id,
                                  incarnation=self.incarnation)

    def _register_shard(self, shard):
        request = self._register_request()
        return self._call(shard, "Register with",
                          lambda r, t: r.stub.Register(request, timeout=t))

    def _heartbeat_loop(self, interval):
        while not self._stop_heartbeats.wait(interval):
            for shard in self._shards:
                request = pb.HeartbeatRequest(worker_id=self.worker_id,
                                              incarnation=self.incarnation)
                # One attempt; a failure moves the shard's calls on (a
                # backup's redirect, a primary that stopped answering).
                _, failed = shard.replicas.attempt_once(
                    lambda r, t: r.stub.Heartbeat(request, timeout=t),
                    2 * interval)
                # Other failures (a server restarting) are the data path's
                # to report.
                if failed is None or not needs_registration(failed.error):
                    continue
                log.warning("the lease on %s expired (%s); registering again",
                            shard.address, failed.error.details())
                try:
                    shard.stub.Register(self._register_request(),
                                        timeout=interval)
                except grpc.RpcError:
                    pass  # the next beat, or the next push, tries again

    def _leave(self, reason):
        self._left = True
        self._stop_heartbeats.set()

        def leave_shard(shard):
            request = pb.LeaveRequest(worker_id=self.worker_id,
                                      incarnation=self.incarnation,
                                      reason=reason)
            self._call(shard, "Leave",
                       lambda r, t: r.stub.Leave(request, timeout=t))
        self._on_every_shard(leave_shard)

    def _leave_after_failed_start(self, failure):
        # The servers must not count this worker toward the next run's
        # rounds; unreachable servers let the lease run out instead.
        if self.step == 0 and not self._left and isinstance(failure, Rejected):
            try:
                self._leave(pb.LeaveRequest.START_FAILED)
            except Error as left:
                log.warning("could not leave after failing to start: %s", left)

    def _on_stop_signal(self, number, frame):
        del frame
        self._stop_signal = number
        # Like ps_worker's --stop_grace: leaving must not hang the exit.
        timer = threading.Timer(self._stop_grace, os._exit, (128 + number,))
        timer.daemon = True
        timer.start()
        if not self._in_step:
            self._stop_now()
        # Otherwise the step in flight finishes first (_in_a_step).

    def _stop_now(self):
        number = self._stop_signal
        log.warning("received %s: leaving the job; a restart with worker_id "
                    "%d resumes at step %d", signal.Signals(number).name,
                    self.worker_id, self.step)
        try:
            self.close(finished=False)
        finally:
            raise SystemExit(128 + number)

    def _shutdown(self):
        self._closed = True
        self._stop_heartbeats.set()
        if (self._heartbeats is not None and
                self._heartbeats is not threading.current_thread()):
            self._heartbeats.join()
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers = {}
        self._pool.shutdown(wait=True)
        for shard in self._shards:
            for replica in shard.replicas.members:
                replica.channel.close()

    # -- calls ------------------------------------------------------------

    def _call(self, shard, what, attempt):
        """attempt(replica, timeout) with retries at the shard's primary;
        errors as pyps exceptions."""
        try:
            return call_with_retry(self.retry, f"{what} {shard.address}",
                                   lambda t: shard.replicas.call(attempt, t))
        except grpc.RpcError as error:
            raise as_pyps_error(shard.address, error) from None

    def _call_pushing(self, shard, what, attempt):
        """A call that pushes: retried with the same seq, at whichever
        replica leads the shard (the server applies it once); re-registers
        once when the lease expired meanwhile.
        Returns the answer and how many attempts carried this seq."""
        attempts = 0

        def counted(replica, timeout):
            nonlocal attempts
            attempts += 1
            return attempt(replica, timeout)

        def call():
            return call_with_retry(
                self.retry, f"{what} {shard.address}",
                lambda t: shard.replicas.call(counted, t)), attempts
        try:
            try:
                return call()
            except grpc.RpcError as error:
                if not needs_registration(error):
                    raise
                log.warning("%s refused a push (%s); registering again",
                            shard.address, error.details())
            self._register_shard(shard)
            with self._counts_lock:  # shards' threads count at once
                self.push_counts.reregistered += 1
            return call()
        except grpc.RpcError as error:
            raise as_pyps_error(shard.address, error) from None

    def _on_every_shard(self, work):
        """work(shard) on every shard at once (the last on this thread);
        the answers in shard order, or the first shard's error once all
        calls ended."""
        futures = [self._pool.submit(work, s) for s in self._shards[:-1]]
        results = []
        failure = None
        try:
            last = work(self._shards[-1])
        except Error as error:
            failure, last = error, None
        for future in futures:
            try:
                results.append(future.result())
            except Error as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return results + [last]

    def _status_of_every_shard(self):
        def status(shard):
            return self._call(shard, "Status of", lambda r, t: r.stub.Status(
                pb.StatusRequest(), timeout=t))
        return self._on_every_shard(status)

    def _in_a_step(self, step):
        """Runs a step's calls; a stop signal that came meanwhile is obeyed
        once they are done."""
        self._in_step = True
        try:
            return step()
        finally:
            self._in_step = False
            if self._stop_signal:
                self._stop_now()

    # -- the data path ----------------------------------------------------

    def _pull_rows(self, min_version, batches):
        """Pulls θ and the rows of `batches` (_SparseBatch) from every
        shard: (θ as pull() returns it, {table: rows})."""
        self._require_model(reading=True)
        rows = self._row_buffers(batches)

        def pull_shard(shard, theta):
            request = self._pull_request(
                shard, min_version,
                sparse=self._sparse_fields(shard, batches)).SerializeToString()
            raw = self._call(shard, "Pull from", lambda r, t: r.raw["Pull"](
                request, timeout=t))
            answer = pb.PullResponse.FromString(raw)
            self._take_pulled(shard, answer, theta)
            self._take_rows(shard, batches, answer.sparse, rows)

        return self._in_a_step(lambda: self._pulled(pull_shard)), rows

    def _push_rows(self, grads, batch_size, pushed):
        self._require_model()
        flat = self._dense_gradient(grads)
        batches = self._sparse_batches(pushed, with_rows=True)
        seq = self._take_seq()
        sizes = []

        def push_shard(shard):
            request = self._push_bytes(shard, seq, batch_size, flat, batches)
            sizes.append(len(request))
            raw = self._call_pushing(shard, "Push to", lambda r, t: r.raw[
                "Push"](request, timeout=t))
            answer = pb.PushResponse.FromString(raw[0])
            self._learn_mode(shard, answer.mode)
            return answer, raw[1]

        def step():
            self._count(self._on_every_shard(push_shard), sizes)
            self.step += 1
        self._in_a_step(step)

    def _push_pull_rows(self, grads, batch_size, pushed, min_version, wanted):
        self._require_model()
        flat = self._dense_gradient(grads)
        push_batches = self._sparse_batches(pushed, with_rows=True)
        pull_batches = self._sparse_batches(wanted, with_rows=False)
        rows = self._row_buffers(pull_batches)
        seq = self._take_seq()
        sizes = []

        def push_pull_shard(shard, theta):
            push = self._push_bytes(shard, seq, batch_size, flat, push_batches)
            pull = self._pull_request(
                shard, min_version, clock=self.step + 1,
                sparse=self._sparse_fields(shard, pull_batches)
            ).SerializeToString()
            request = b"".join([
                _length_delimited(_PUSH_PULL_PUSH, len(push)), push,
                _length_delimited(_PUSH_PULL_PULL, len(pull)), pull])
            sizes.append(len(request))
            raw = self._call_pushing(
                shard, "PushPull with",
                lambda r, t: r.raw["PushPull"](request, timeout=t))
            answer = pb.PushPullResponse.FromString(raw[0])
            self._learn_mode(shard, answer.push.mode)
            self._take_pulled(shard, answer.pull, theta)
            self._take_rows(shard, pull_batches, answer.pull.sparse, rows)
            return answer.push, raw[1]

        def step():
            answers = []

            def record(shard, theta):
                answers.append(push_pull_shard(shard, theta))
            try:
                return self._pulled(record), rows
            finally:
                self._count(answers, sizes)
                self.step += 1
        return self._in_a_step(step)

    def _dense_gradient(self, grads):
        """The dense gradient, flattened; a model without tensors has
        none."""
        if grads is None:
            if self._tensors:
                raise ValueError(
                    "the model has dense tensors: pass their gradient "
                    "(grads=) too, a push is one update of the whole model")
            grads = {}
        return self._flatten(grads, "gradient")

    def _sparse_batches(self, batches, with_rows):
        """{table: keys} (a pull) or {table: (keys, rows)} (a push) as
        _SparseBatch, checked before anything is sent."""
        out = []
        for name, value in batches.items():
            table = self._tables.get(name)
            if table is None:
                raise ValueError(f"table '{name}' was not declared at init() "
                                 f"(declared: {sorted(self._tables)})")
            if with_rows:
                if not isinstance(value, (tuple, list)) or len(value) != 2:
                    raise ValueError(f"the gradient of table '{name}' is "
                                     "(keys, rows)")
                keys = checked_keys(_as_numpy(value[0]), name)
                rows = checked_rows(_as_numpy(value[1]), keys.size,
                                    table.dim, name)
            else:
                keys, rows = checked_keys(_as_numpy(value), name), None
            out.append(_SparseBatch(name, table.dim, keys, rows,
                                    routes(keys, len(self._shards))))
        return out

    @staticmethod
    def _row_buffers(batches):
        return {b.table: np.empty((b.keys.size, b.dim), dtype=_WIRE_FLOAT)
                for b in batches}

    @staticmethod
    def _sparse_fields(shard, batches):
        """The shard's SparseRows of `batches`: the tables it holds keys of,
        each once."""
        fields = []
        for batch in batches:
            mine = batch.routes[shard.index]
            if mine.size == 0:
                continue
            fields.append(pb.SparseRows(
                table=batch.table, keys=batch.keys[mine].tobytes(),
                values=b"" if batch.rows is None
                else batch.rows[mine].tobytes()))
        return fields

    @staticmethod
    def _take_rows(shard, batches, pulled, rows):
        """Puts the shard's answered rows in the caller's order of keys."""
        answered = iter(pulled)
        for batch in batches:
            mine = batch.routes[shard.index]
            if mine.size == 0:
                continue
            entry = next(answered, None)
            if (entry is None or entry.table != batch.table or
                    len(entry.values) != mine.size * batch.dim * 4):
                raise Error(f"server {shard.address} did not answer the rows "
                            f"of table '{batch.table}' it was asked for")
            rows[batch.table][mine] = np.frombuffer(
                entry.values, dtype=_WIRE_FLOAT).reshape(mine.size, batch.dim)

    def _take_seq(self):
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _pull_request(self, shard, min_version, clock=None, sparse=()):
        sync = self._mode == pb.MODE_SYNC
        if min_version is None:
            min_version = self._init_version if sync else 0
        # Sync: each shard's next round, so shards that fell out of step
        # each keep their own rounds.
        if sync and shard.pulled:
            min_version = shard.pulled_version + 1
        return pb.PullRequest(worker_id=self.worker_id,
                              min_version=min_version,
                              clock=self.step if clock is None else clock,
                              sparse=sparse)

    def _push_bytes(self, shard, seq, batch_size, flat, batches=()):
        """The shard's PushRequest, its dense gradient copied once from the
        arrays' buffers, with its keys' rows of `batches`."""
        header = pb.PushRequest(
            worker_id=self.worker_id, incarnation=self.incarnation, seq=seq,
            step=self.step, base_version=shard.pulled_version,
            batch_size=batch_size, key_begin=shard.begin,
            key_end=shard.end,
            sparse=self._sparse_fields(shard, batches)).SerializeToString()
        pieces = self._pieces(flat, shard)
        size = sum(len(p) for p in pieces)
        return b"".join([header, _length_delimited(_PUSH_GRADIENT, size), *pieces])

    def _pulled(self, fetch):
        """fetch(shard, theta) on every shard into one new flat θ; returns
        it as {name: view shaped as declared}."""
        theta = np.empty(self._num_keys, dtype=np.float32)
        self._on_every_shard(lambda shard: fetch(shard, theta))
        return {t.name: theta[t.offset:t.offset + t.size].reshape(t.shape)
                for t in self._tensors}

    def _take_pulled(self, shard, answer, theta):
        values = np.frombuffer(answer.values, dtype=_WIRE_FLOAT)
        if values.size != shard.end - shard.begin:
            raise Error(f"server {shard.address} sent {values.size} values "
                        f"for keys [{shard.begin}, {shard.end})")
        theta[shard.begin:shard.end] = values
        self._learn_mode(shard, answer.mode)
        if shard.pulled and answer.version < shard.pulled_version:
            log.warning("%s went back from version %d to %d: %d updates lost "
                        "(the server restarted from a checkpoint)",
                        shard.address, shard.pulled_version, answer.version,
                        shard.pulled_version - answer.version)
        shard.pulled = True
        shard.pulled_version = answer.version
        shard.pulled_samples = answer.samples_applied
        shard.pulled_waited_us = answer.waited_us

    def _learn_mode(self, shard, mode):
        # An older server does not say: keep what Init reported.
        if mode == pb.MODE_UNSPECIFIED or mode == self._mode:
            return
        log.warning("%s now runs in %s mode (it was %s): pushing and pulling "
                    "by its rules from now on", shard.address,
                    _MODE_NAMES.get(mode), self.mode)
        self._mode = mode

    def _count(self, answers, request_sizes):
        """Counts (answer, attempts) pairs, and the call's request bytes to
        every shard, as the C++ client does."""
        self.pushes += 1
        self.push_request_bytes += sum(request_sizes)
        for answer, attempts in answers:
            if answer.outcome == pb.PushResponse.STALE:
                self.push_counts.stale += 1
            elif answer.outcome == pb.PushResponse.DUPLICATE and attempts == 1:
                self.push_counts.duplicate += 1
            else:
                # A DUPLICATE after more than one attempt: an earlier
                # attempt got there and its reply was lost.
                self.push_counts.applied_or_accepted += 1

    def _flatten(self, arrays, what):
        """The declared tensors' values as float32 arrays in key order,
        checked before anything is sent; converted only when they are not
        contiguous float32 already."""
        names = [t.name for t in self._tensors]
        if list(arrays) != names and set(arrays) != set(names):
            missing = sorted(set(names) - set(arrays))
            extra = sorted(set(arrays) - set(names))
            raise ValueError(f"the {what}s must name exactly the declared "
                             f"tensors: missing {missing}, undeclared {extra}")
        flat = []
        for tensor in self._tensors:
            value = arrays[tensor.name]
            dtype = getattr(value, "dtype", None)
            if dtype is None or np.dtype(dtype).kind not in _FLOAT_KINDS:
                raise ValueError(f"{what} of tensor '{tensor.name}' has dtype "
                                 f"{dtype}; a float array is needed")
            if tuple(np.shape(value)) != tensor.shape:
                raise ValueError(f"{what} of tensor '{tensor.name}' has shape "
                                 f"{tuple(np.shape(value))}, declared "
                                 f"{tensor.shape}")
            flat.append(np.ascontiguousarray(value, dtype=_WIRE_FLOAT)
                        .reshape(-1))
        return flat

    def _pieces(self, flat, shard):
        """Byte views of the parts of `flat` (per-tensor arrays in key
        order) that fall in the shard's key range; no copy."""
        pieces = []
        for tensor, values in zip(self._tensors, flat):
            begin = max(shard.begin, tensor.offset)
            end = min(shard.end, tensor.offset + tensor.size)
            if begin < end:
                pieces.append(memoryview(
                    values[begin - tensor.offset:end - tensor.offset]).cast("B"))
        return pieces

    def _model_difference(self, shard, specs, table_specs=()):
        """How the shard's declared model differs from `specs`; empty when
        it does not (or cannot be asked)."""
        try:
            status = self._call(shard, "Status of", lambda r, t: r.stub.Status(
                pb.StatusRequest(), timeout=t))
        except Error:
            return ""
        if not status.initialized:
            return ""
        return (_list_difference("tensor", specs, list(status.tensors),
                                 _tensor_difference) or
                _list_difference("table", table_specs,
                                 [t.spec for t in status.tables],
                                 _table_difference))

    def _require_registered(self, reading=False):
        if self._closed:
            raise Error("this client is closed")
        if self.job_complete:
            raise Error("the job is already complete: every worker finished "
                        "on every server; to train again, start the servers "
                        "afresh")
        if self._left and not reading:
            raise Error("this client left the job: it may pull, not push")

    def _require_model(self, reading=False):
        self._require_registered(reading)
        if self._tensors is None:
            raise Error("declare the model with init() first")
