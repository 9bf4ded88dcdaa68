"""Errors of the cloud, each one mapped to a gRPC status for remote callers.

::

    CloudError                 (a message a user can act on)
    ├── InvalidArgument        bad request: missing field, bad value         INVALID_ARGUMENT
    ├── NotFound               no such data, model, version or organisation  NOT_FOUND
    ├── PermissionDenied       exists, but not for this key                  PERMISSION_DENIED
    ├── AlreadyExists          a name or version taken                       ALREADY_EXISTS
    ├── Unauthenticated        no, bad or expired credentials                UNAUTHENTICATED
    ├── Busy                   too many inferences waiting; retry later      RESOURCE_EXHAUSTED
    ├── ModelFailed            the model could not load or run               FAILED_PRECONDITION
    └── Unavailable            no inference worker could serve the request   UNAVAILABLE

Another organisation's data is always ``NotFound`` (its existence is not revealed); naming
another organisation is ``PermissionDenied``.
"""

from __future__ import annotations

from grpclib.const import Status

__all__ = [
    "AlreadyExists",
    "Busy",
    "CloudError",
    "InvalidArgument",
    "ModelFailed",
    "NotFound",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
]


class CloudError(Exception):
    """A request the cloud refuses; ``status`` is what a gRPC caller sees."""

    status: Status = Status.INTERNAL


class InvalidArgument(CloudError):
    status = Status.INVALID_ARGUMENT


class NotFound(CloudError):
    status = Status.NOT_FOUND


class PermissionDenied(CloudError):
    status = Status.PERMISSION_DENIED


class AlreadyExists(CloudError):
    status = Status.ALREADY_EXISTS


class Unauthenticated(CloudError):
    status = Status.UNAUTHENTICATED


class Busy(CloudError):
    status = Status.RESOURCE_EXHAUSTED


class ModelFailed(CloudError):
    status = Status.FAILED_PRECONDITION


class Unavailable(CloudError):
    status = Status.UNAVAILABLE
