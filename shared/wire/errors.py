"""The one recserve exception tree.

    RecserveError
    ├── InvalidArgument      a request field is out of range   -> INVALID_ARGUMENT
    │   └── ImportLineError  a malformed line of an imported file (shared/storage/importers.py)
    ├── NotFound             an unknown model version or job   -> NOT_FOUND
    ├── FailedPrecondition   the thing exists but can't do that -> FAILED_PRECONDITION
    ├── Unavailable          no model and no fallback yet      -> UNAVAILABLE
    │   └── DatabaseUnavailable  the database cannot be reached right now
    ├── BundleError          a model bundle is missing, corrupt or fails its checksums
    │   └── ParityError      the exported ONNX graph disagrees with the torch model
    ├── StorageError         the database refused a write
    ├── Overloaded           a queue is full: shed at once       -> RESOURCE_EXHAUSTED
    ├── StreamIdle           a client stream sent nothing for too long -> DEADLINE_EXCEEDED
    ├── JobCancelled         an operator cancelled the running job (the worker stops it)
    └── StaleAttempt         a job attempt that is no longer the job's current one

The server maps these to gRPC status codes in exactly one place (server/errors.py).
Every message names the field or thing at fault and says what would be accepted.
"""

from __future__ import annotations


class RecserveError(Exception):
    """Base of every error recserve raises on purpose."""


class InvalidArgument(RecserveError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.description = message


class NotFound(RecserveError):
    pass


class FailedPrecondition(RecserveError):
    pass


class Unavailable(RecserveError):
    pass


class DatabaseUnavailable(Unavailable):
    """The database refused a connection or a statement (down, timed out, full)."""


class BundleError(RecserveError):
    pass


class ParityError(BundleError):
    pass


class StorageError(RecserveError):
    pass


class Overloaded(RecserveError):
    """The server is at a bounded queue's limit; the call is refused at once (safe to
    retry with backoff) rather than queued without bound."""


class StreamIdle(RecserveError):
    """A client stream sent no message for server.stream_idle_timeout_s; it is ended so
    that idle streams cannot hold the server's capacity."""


class JobCancelled(RecserveError):
    pass


class StaleAttempt(RecserveError):
    """A job attempt whose fencing token (Job.attempts) is no longer the job's: the
    reaper requeued the job after its worker went silent, and another attempt runs or ran.
    The database refuses the stale attempt's writes; the attempt stops and discards what
    it made."""
