"""The structured details our servers attach to errors (the contract in
proto/google/rpc/): a program reads these, never the error message."""

import grpc

# Mirrors common/error_info.h: the ErrorInfo of a FAILED_PRECONDITION that
# asks the worker to register again (lease expired, unknown worker, stale
# incarnation).
DOMAIN = "ps.v1"
REGISTRATION_REQUIRED = "REGISTRATION_REQUIRED"
# The FAILED_PRECONDITION of a shard's backup (README, "Replicated shards"):
# metadata {"primary": host:port, "term": n} names the primary it follows.
NOT_PRIMARY = "NOT_PRIMARY"
# The RESOURCE_EXHAUSTED of a server's bound on waiting pulls, which passes:
# one without it is gRPC's refusal of a request larger than the server
# reads, which no retry changes.
TOO_MANY_PARKED_PULLS = "TOO_MANY_PARKED_PULLS"

_DETAILS_KEY = "grpc-status-details-bin"


def error_infos(error):
    """The google.rpc.ErrorInfo details of a grpc.RpcError (none when the
    server sent no details)."""
    # Imported here: the generated modules exist only once the build ran.
    from google.rpc import error_details_pb2, status_pb2
    for key, value in error.trailing_metadata() or ():
        if key != _DETAILS_KEY:
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Is(info.DESCRIPTOR):
                detail.Unpack(info)
                yield info


def has_reason(error, reason):
    """True when the grpc.RpcError carries our domain's ErrorInfo `reason`."""
    return any(info.domain == DOMAIN and info.reason == reason
               for info in error_infos(error))


def needs_registration(error):
    """True when the server no longer knows this worker's incarnation."""
    if not isinstance(error, grpc.RpcError):
        return False
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return False
    return has_reason(error, REGISTRATION_REQUIRED)


def not_primary(error):
    """The ErrorInfo of a backup's NOT_PRIMARY refusal (its metadata names
    the primary), or None when the grpc.RpcError is another one."""
    if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    return next((info for info in error_infos(error)
                 if info.domain == DOMAIN and info.reason == NOT_PRIMARY),
                None)
