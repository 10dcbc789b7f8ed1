"""Which replica of a shard a worker's calls go to (README, "Replicated
shards": how workers find the primary), by the rule of the C++ client
(worker/replica_choice.h, ParameterClient::CallShard).

A shard is listed as its replicas joined by '|' ("a0|a1"); calls go to the
replica last known as primary. A backup's NOT_PRIMARY names the primary: it
is asked at once. A replica that does not answer: the next one is. A backup
that still names the replica that just failed has not noticed yet; it is
asked again every 20 ms for up to 2 s while it takes over."""

import dataclasses
import logging
import threading
import time

import grpc

from pyps.retry import is_retryable
from pyps.status_details import not_primary

log = logging.getLogger("pyps")

# ParameterClient::kFailoverWindow: how long a replica that did not answer
# is not followed back to, and how long a backup naming it is asked again.
FAILOVER_WINDOW = 2.0
# The pause between those questions.
FAILOVER_POLL = 0.02


class WaitingForFailover(grpc.RpcError):
    """The UNAVAILABLE a caller's retry loop sees while a shard's backup
    names no reachable primary: it passes once the backup takes over."""

    def __init__(self, details):
        super().__init__(details)
        self._details = details

    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return self._details

    def trailing_metadata(self):
        return ()


@dataclasses.dataclass(frozen=True)
class ReplicaChoice:
    # The replica for the next attempt.
    next: int
    # True: `next` is the primary a backup named; try it at once.
    redirected: bool
    # True: a backup names the replica that did not answer; it is taking
    # over or will. Ask it again soon.
    awaiting_failover: bool
    # What the caller's retry loop sees for this attempt (None: success).
    error: Exception


def choose_replica(replicas, tried, unreachable, error):
    """The next attempt's replica after the attempt on `tried` (an index in
    `replicas`, their addresses) ended with `error` (a grpc.RpcError, or
    None). `unreachable`: the replica last found unreachable, or None.

    - A backup's NOT_PRIMARY naming another listed replica: go there at
      once, unless that replica is `unreachable` (the backup has not
      noticed its primary died yet): stay, and ask again while it takes
      over (UNAVAILABLE for the retry loop). Naming no primary: the same
      while a replica is `unreachable`, else the next replica (this one may
      be cut off from a primary that lives).
    - A failure that may pass (a dead or stopped server): the next replica.
    - Anything else, or a shard with one replica: unchanged."""
    count = len(replicas)
    if error is None or count < 2:
        return ReplicaChoice(tried, False, False, error)
    info = not_primary(error)
    if info is not None:
        named = info.metadata.get("primary", "")
        primary = replicas.index(named) if named in replicas else count
        if primary < count and primary != tried and primary != unreachable:
            return ReplicaChoice(primary, True, False, error)
        named_text = named or "no primary"
        if named and primary < count:
            named_text += ", which did not answer"
        # A backup that knows no primary while none of the others was found
        # unreachable lately may be the one cut off (a partition, or a lost
        # election): the next replica may lead.
        stay = tried if named or unreachable is not None else \
            (tried + 1) % count
        return ReplicaChoice(stay, False, primary == unreachable,
                             WaitingForFailover(
                                 f"{replicas[tried]} is a backup naming "
                                 f"{named_text}: waiting for the shard's "
                                 "failover"))
    if is_retryable(error):
        return ReplicaChoice((tried + 1) % count, False, False, error)
    return ReplicaChoice(tried, False, False, error)


class Replicas:
    """One shard's replicas (`connect(address)` of each) and the one its
    calls go to; safe to use from several threads."""

    def __init__(self, addresses, connect):
        self.addresses = list(addresses)
        self.members = [connect(a) for a in self.addresses]
        self._lock = threading.Lock()
        self._current = 0
        # The replica last found unreachable, and when (time.monotonic()):
        # for FAILOVER_WINDOW a backup naming it is not followed back to it.
        self._unreachable = None
        self._unreachable_at = 0.0

    @property
    def current(self):
        """The replica calls go to: the primary as far as this worker
        knows."""
        with self._lock:
            return self.members[self._current]

    def follow(self, tried, error):
        """Moves the shard's calls on after the attempt on replica `tried`
        failed with `error`; returns the choice."""
        with self._lock:
            now = time.monotonic()
            unreachable = self._unreachable
            if now - self._unreachable_at >= FAILOVER_WINDOW:
                unreachable = None
            choice = choose_replica(self.addresses, tried, unreachable, error)
            if choice.next == tried:
                return choice
            if not choice.redirected:
                self._unreachable = tried
                self._unreachable_at = now
            # Another thread may have moved on already: only from `tried`.
            if self._current == tried:
                self._current = choice.next
                log.info("%s %s (%s): calls go to %s now",
                         self.addresses[tried],
                         "is a backup" if choice.redirected
                         else "did not answer", error.details(),
                         self.addresses[choice.next])
            return choice

    def attempt_once(self, attempt, timeout):
        """attempt(member, timeout) on the current replica; a failure moves
        the shard's calls on (follow) and returns its choice. Returns
        (answer, None) or (None, choice)."""
        with self._lock:
            tried = self._current
        try:
            return attempt(self.members[tried], timeout), None
        except grpc.RpcError as error:
            return None, self.follow(tried, error)

    def call(self, attempt, timeout):
        """One attempt of the caller's retry loop: attempt(member, timeout)
        at the primary, following a backup's redirect at once and asking a
        backup that awaits its failover again soon. Raises the
        grpc.RpcError the retry loop should see."""
        answer, choice = self.attempt_once(attempt, timeout)
        give_up = time.monotonic() + FAILOVER_WINDOW
        hops = 1
        while choice is not None:
            # Bounded: two backups naming each other wait for the backoff.
            if choice.redirected and hops < len(self.members):
                hops += 1
            elif choice.awaiting_failover and time.monotonic() < give_up:
                time.sleep(FAILOVER_POLL)
            else:
                raise choice.error
            answer, choice = self.attempt_once(attempt, timeout)
        return answer
