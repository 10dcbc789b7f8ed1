"""Deadlines and retries by the rules of the C++ client (common/rpc/retry.h):
every call has a deadline; a failure that may pass is retried with
exponential backoff; nothing waits longer than max_retry_time in all."""

import dataclasses
import logging
import time

import grpc

from pyps.errors import Rejected, ServerUnavailable
from pyps.status_details import TOO_MANY_PARKED_PULLS, has_reason

log = logging.getLogger("pyps")

# Our clients never cancel their own calls, so CANCELLED comes from a server
# shutting down under them.
RETRYABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
})


def is_retryable(error):
    """Whether the grpc.RpcError may pass by retrying (rpc::IsRetryable):
    RESOURCE_EXHAUSTED only from a server's bound on waiting pulls."""
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return has_reason(error, TOO_MANY_PARKED_PULLS)
    return error.code() in RETRYABLE


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Seconds; the defaults are ps_worker's."""
    # Deadline of one attempt (--rpc_deadline).
    rpc_deadline: float = 30.0
    # Give up when the next attempt would start after this (--max_retry_time).
    max_retry_time: float = 120.0
    # First pause between attempts, doubled each time.
    initial_backoff: float = 0.05
    # Longest pause: bounds how long a worker idles after its server is back.
    max_backoff: float = 1.0

    def __post_init__(self):
        if not self.rpc_deadline > 0 or not self.max_retry_time > 0:
            raise ValueError(
                "rpc_deadline and max_retry_time must be > 0 seconds, got "
                f"{self.rpc_deadline} and {self.max_retry_time}")


def call_with_retry(policy, what, attempt):
    """Runs attempt(timeout) until it returns, fails for good, or the policy
    runs out; the last grpc.RpcError is raised as it is."""
    start = time.monotonic()
    give_up = start + policy.max_retry_time
    backoff = policy.initial_backoff
    attempts = 0
    while True:
        attempts += 1
        try:
            return attempt(policy.rpc_deadline)
        except grpc.RpcError as error:
            if not is_retryable(error):
                raise
            if time.monotonic() + backoff > give_up:
                log.error("%s failed after %d attempt%s in %.1fs: %s", what,
                          attempts, "" if attempts == 1 else "s",
                          time.monotonic() - start, error.details())
                raise
            # The first failures are routine (a peer still starting).
            if attempts == 3 or attempts % 20 == 0:
                log.warning("%s attempt %d failed (%s); retrying", what,
                            attempts, error.details())
        time.sleep(backoff)
        backoff = min(backoff * 2, policy.max_backoff)


def as_pyps_error(address, error):
    """The exception a caller can act on for a failed call to `address`."""
    message = f"server {address}: {error.details()}"
    if is_retryable(error):
        return ServerUnavailable(message)
    return Rejected(message)
