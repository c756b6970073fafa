"""Errors raised by the ``jwks`` library tier.

Each carries a short machine-readable ``code``; messages never contain a token or a key.
"""

from __future__ import annotations


class JwksError(Exception):
    """Base of every error this package raises."""

    code = "jwks_error"


class KeyError_(JwksError):
    """A key could not be generated, imported or used."""

    code = "invalid_key"


class UnsupportedAlgorithm(JwksError):
    """An algorithm outside the allow-list was named or used."""

    code = "unsupported_algorithm"


class InvalidPattern(JwksError, ValueError):
    """A SPIFFE ID pattern is malformed (a ValueError too, so pydantic validators turn it
    into a validation error)."""

    code = "invalid_pattern"


class InvalidSpiffeId(InvalidPattern):
    """A SPIFFE ID is malformed or not in canonical form (``jwks.spiffe_id``)."""

    code = "invalid_spiffe_id"


class JwksFetchError(JwksError):
    """The JWKS (or issuer metadata) could not be fetched or parsed."""

    code = "jwks_unavailable"


class InvalidToken(JwksError):
    """The token failed verification; ``code`` names the check that failed."""

    code = "invalid_token"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UnknownKeyId(InvalidToken):
    code = "unknown_kid"


class BadSignature(InvalidToken):
    code = "bad_signature"


class InvalidTokenType(InvalidToken):
    code = "invalid_typ"


class InvalidAudience(InvalidToken):
    code = "invalid_aud"


class TokenExpired(InvalidToken):
    code = "expired"


class TokenInactive(InvalidToken):
    """The issuer's introspection says the token is no longer active (revoked)."""

    code = "inactive"


class MissingHeader(InvalidToken):
    """The ``Txn-Token`` HTTP header was absent or repeated."""

    code = "missing_txn_token"


class ChainRequirementFailed(InvalidToken):
    """A required workload did not act earlier in the transaction's chain."""

    code = "chain_requirement"
