"""Registry errors; the admin API maps each ``status`` to its HTTP status."""

from __future__ import annotations


class RegistryError(Exception):
    status = 400
    code = "invalid_request"


class NotFound(RegistryError):
    status = 404
    code = "not_found"


class Conflict(RegistryError):
    status = 409
    code = "conflict"


class Invalid(RegistryError):
    status = 422
    code = "invalid_request"


class OutOfBounds(RegistryError):
    """A registrar tried to enroll outside the namespaces its admin token allows."""

    status = 403
    code = "forbidden"
