"""The exceptions pyps raises: each says what went wrong and whom to ask."""


class Error(Exception):
    """Base of every pyps error."""


class ServerUnavailable(Error):
    """A server did not answer within max_retry_time (it is down, or the
    address is wrong)."""


class Rejected(Error):
    """A server refused a request as invalid; the message is the server's."""


class ModelMismatch(Rejected):
    """The servers hold another model than the one this worker declared."""
