"""pyps's replica choice (pyps/replica_choice.py) without servers: the rule
of worker/replica_choice.h, and a shard's calls following it, with fake
replicas that answer as a primary, a backup or a dead server would."""

import grpc
import pytest

from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from pyps import replica_choice
from pyps.replica_choice import Replicas, choose_replica

A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


class FakeError(grpc.RpcError):
    """A failed call as grpc raises it, with optional ErrorInfo details."""

    def __init__(self, code, details="", reason=None, metadata=None):
        super().__init__(details)
        self._code = code
        self._details = details
        self._trailing = ()
        if reason is not None:
            info = error_details_pb2.ErrorInfo(
                reason=reason, domain="ps.v1", metadata=metadata or {})
            detail = any_pb2.Any()
            detail.Pack(info)
            status = status_pb2.Status(code=code.value[0], message=details,
                                       details=[detail])
            self._trailing = (("grpc-status-details-bin",
                               status.SerializeToString()),)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailing


def not_primary(primary, term=2):
    return FakeError(grpc.StatusCode.FAILED_PRECONDITION, "a backup",
                     "NOT_PRIMARY", {"primary": primary, "term": str(term)})


def unavailable():
    return FakeError(grpc.StatusCode.UNAVAILABLE, "connection refused")


def test_a_backup_naming_another_replica_redirects_at_once():
    choice = choose_replica([A, B, C], 0, None, not_primary(C))
    assert (choice.next, choice.redirected, choice.awaiting_failover) == (
        2, True, False)


def test_a_failure_that_may_pass_moves_to_the_next_replica_wrapping():
    assert choose_replica([A, B], 0, None, unavailable()).next == 1
    assert choose_replica([A, B], 1, None, unavailable()).next == 0
    deadline = FakeError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline")
    assert choose_replica([A, B, C], 1, None, deadline).next == 2


def test_a_backup_naming_the_replica_that_did_not_answer_is_awaited():
    # Replica 0 did not answer; replica 1 has not taken over yet.
    choice = choose_replica([A, B], 1, 0, not_primary(A, term=1))
    assert (choice.next, choice.redirected, choice.awaiting_failover) == (
        1, False, True)
    # The retry loop sees a failure that passes.
    assert choice.error.code() == grpc.StatusCode.UNAVAILABLE
    assert "which did not answer" in choice.error.details()


def test_a_backup_naming_no_listed_primary_is_retried_not_followed():
    choice = choose_replica([A, B], 1, None, not_primary("elsewhere:9"))
    assert (choice.next, choice.redirected, choice.awaiting_failover) == (
        1, False, False)
    assert choice.error.code() == grpc.StatusCode.UNAVAILABLE


def test_a_backup_naming_no_primary_is_left_unless_a_failover_is_under_way():
    # It may be cut off from a primary that lives: the next replica.
    choice = choose_replica([A, B], 1, None, not_primary(""))
    assert (choice.next, choice.redirected) == (0, False)
    assert choice.error.code() == grpc.StatusCode.UNAVAILABLE
    # A replica did not answer lately: it is taking over, or will.
    assert choose_replica([A, B], 1, 0, not_primary("")).next == 1


def test_a_refusal_that_does_not_pass_and_a_single_replica_stay():
    invalid = FakeError(grpc.StatusCode.INVALID_ARGUMENT, "bad seq")
    choice = choose_replica([A, B], 0, None, invalid)
    assert (choice.next, choice.error) == (0, invalid)
    assert choose_replica([A], 0, None, unavailable()).next == 0
    assert choose_replica([A, B], 1, None, None).next == 1


class FakeReplica:
    """Answers each call from a script: "ok", "dead", or a primary's
    address (NOT_PRIMARY naming it); the last entry repeats."""

    def __init__(self, address, script):
        self.address = address
        self.script = list(script)
        self.calls = 0

    def answer(self, request, timeout):
        del timeout
        self.calls += 1
        step = self.script[0] if len(self.script) == 1 else self.script.pop(0)
        if step == "ok":
            return (self.address, request)
        if step == "dead":
            raise unavailable()
        raise not_primary(step)


def shard(scripts):
    fakes = {}

    def connect(address):
        fakes[address] = FakeReplica(address, scripts[address])
        return fakes[address]
    return Replicas(list(scripts), connect), fakes


def call(replicas, request=7):
    return replicas.call(lambda r, t: r.answer(request, t), 1.0)


def test_calls_follow_not_primary_to_the_named_replica_and_stay_there():
    replicas, fakes = shard({A: [B], B: ["ok"]})
    # The same request goes to the primary: a retried push keeps its seq.
    assert call(replicas, request=41) == (B, 41)
    assert replicas.current.address == B
    assert call(replicas) == (B, 7)
    assert (fakes[A].calls, fakes[B].calls) == (1, 2)


def test_a_dead_primary_moves_calls_on_and_its_backup_is_awaited():
    # Replica 0 is dead; replica 1 names it twice more, then leads.
    replicas, fakes = shard({A: ["dead"], B: [A, A, "ok"]})
    # The first attempt fails over: the retry loop retries it.
    with pytest.raises(grpc.RpcError) as failed:
        call(replicas)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert replicas.current.address == B
    # The next attempt waits at B while it takes over (asked every 20 ms),
    # never going back to A.
    assert call(replicas) == (B, 7)
    assert (fakes[A].calls, fakes[B].calls) == (1, 3)


def test_a_backup_that_never_takes_over_is_awaited_for_the_window_only(
        monkeypatch):
    monkeypatch.setattr(replica_choice, "FAILOVER_WINDOW", 0.2)
    replicas, fakes = shard({A: ["dead"], B: [A]})
    with pytest.raises(grpc.RpcError):
        call(replicas)
    with pytest.raises(grpc.RpcError) as failed:
        call(replicas)
    # The attempt ends with a failure the retry loop retries (once the
    # window passed, B's answer is followed back to A, dead still).
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    # B was asked again every FAILOVER_POLL for FAILOVER_WINDOW, not
    # forever.
    assert 3 <= fakes[B].calls <= 0.2 / replica_choice.FAILOVER_POLL + 2


def test_two_backups_naming_each_other_end_the_attempt():
    replicas, fakes = shard({A: [B], B: [A]})
    with pytest.raises(grpc.RpcError) as failed:
        call(replicas)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert fakes[A].calls + fakes[B].calls == 2
