"""The one strict reading of a JWS and its claims, shared by every token Writ checks: the
``jwks`` verifier, JWT-SVIDs (subject and actor tokens, ``jwt-spiffe`` client assertions),
RFC 7523 client assertions and users' access tokens.

A parser differential is an attack: a verifier and a policy engine must never read different
values from one token. So a segment is canonical unpadded base64url, its JSON is UTF-8
(RFC 8725 §3.7) without a byte-order mark, no object repeats a member name at any depth
(RFC 7515 §4, RFC 7519 §4 allow refusing), no number is NaN or infinite, and a NumericDate
is a finite number inside ``[MIN_NUMERIC_DATE, MAX_NUMERIC_DATE]``.

Time claims are checked by ``TimeClaims``, joserfc's ``JWTClaimsRegistry`` with those
bounds, a fixed check order and an optional maximum lifetime.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from joserfc.errors import ExpiredTokenError, InvalidClaimError
from joserfc.jwt import JWTClaimsRegistry

from jwks.errors import InvalidToken

#: NumericDate bounds: the epoch itself up to 9999-12-31T23:59:59Z. Nothing before 1970
#: is a date a token needs, and a later one is past what calendars (and Python's datetime)
#: represent; both ends refuse ``1e309`` (infinity) and negative values.
MIN_NUMERIC_DATE: Final = 0
MAX_NUMERIC_DATE: Final = 253_402_300_799

_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*\Z")
_UTF8_BOM: Final = b"\xef\xbb\xbf"


class JoseRefused(InvalidToken):
    """A token refused by the shared layer; ``code`` is the reason (``malformed``,
    ``missing_exp``, ``invalid_iat``, ``expired``, ``lifetime_too_long`` ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def _malformed(why: str) -> JoseRefused:
    return JoseRefused("malformed", why)


def split_compact(token: str) -> tuple[str, str, str]:
    """RFC 7515 §7.1: ``BASE64URL(header).BASE64URL(payload).BASE64URL(signature)``."""
    if not isinstance(token, str):
        raise _malformed("token must be a string")
    parts = token.split(".")
    if len(parts) != 3:
        raise _malformed("not a JWS compact serialization")
    return parts[0], parts[1], parts[2]


def b64url_decode(segment: str) -> bytes:
    """RFC 7515 §2: base64url without padding, in its one canonical spelling (no padding,
    no whitespace, no stray bits), so one token has exactly one encoding."""
    if not _B64URL.match(segment) or len(segment) % 4 == 1:
        raise _malformed("segment is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as err:
        raise _malformed("segment is not base64url") from err
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment:
        raise _malformed("segment is not canonical base64url")
    return raw


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            # the name is not echoed: it may be anything the sender chose
            raise ValueError("duplicate member name")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    # RFC 8259 §6: NaN and Infinity are not JSON numbers
    raise ValueError("not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e309 reads as infinity
        raise ValueError("number out of range")
    return value


def loads_strict_json(data: bytes) -> Any:
    """Decode JSON bytes as RFC 8725 §3.7 and RFC 7515 §4 want: UTF-8 only (no BOM, no
    UTF-16/32 guessing), no duplicate member names at any depth, finite numbers only."""
    if data.startswith(_UTF8_BOM):
        raise ValueError("JSON must not start with a byte-order mark")
    text = data.decode("utf-8")  # strict: a UTF-16 or Latin-1 body fails here
    return json.loads(
        text,
        object_pairs_hook=_no_duplicates,
        parse_constant=_no_constant,
        parse_float=_finite_float,
    )


def json_object(segment: str, what: str) -> dict[str, Any]:
    """A base64url segment holding one strict JSON object (a JOSE header or claims set)."""
    raw = b64url_decode(segment)
    try:
        value = loads_strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise _malformed(f"{what} is not strict UTF-8 JSON") from err
    if not isinstance(value, dict):
        raise _malformed(f"{what} is not a JSON object")
    return value


def is_numeric_date(value: Any, *, integer: bool = False) -> bool:
    """RFC 7519 §2 NumericDate inside Writ's bounds; ``integer`` for whole seconds only."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return MIN_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE
    if integer or not isinstance(value, float):
        return False
    return math.isfinite(value) and MIN_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE


@dataclass(frozen=True, slots=True)
class Times:
    exp: float
    iat: float | None
    nbf: float | None


class TimeClaims(JWTClaimsRegistry):
    """joserfc's claims registry for ``exp``, ``iat`` and ``nbf`` with NumericDate bounds.

    ``check`` always runs in one order (types first, then ``exp``, ``iat``, ``nbf``, then
    the lifetime), whatever order the claims arrive in, and raises ``JoseRefused`` whose
    code names the claim: ``missing_exp``, ``invalid_exp``, ``expired``, ``missing_iat``,
    ``invalid_iat``, ``iat_in_future``, ``invalid_nbf``, ``not_yet_valid``,
    ``lifetime_too_long``.
    """

    def __init__(
        self,
        now: float,
        leeway: float,
        *,
        require_iat: bool = False,
        integer_dates: bool = False,
        max_lifetime_s: float | None = None,
    ) -> None:
        super().__init__(now=now, leeway=leeway)  # type: ignore[arg-type]
        self._require_iat = require_iat
        self._integer = integer_dates
        self._max_lifetime = max_lifetime_s

    def check(self, claims: Mapping[str, Any]) -> Times:
        exp = self._date(claims, "exp", required=True)
        iat = self._date(claims, "iat", required=self._require_iat)
        nbf = self._date(claims, "nbf", required=False)
        assert exp is not None
        try:
            # RFC 7519 §4.1.4: not accepted on or after exp (plus leeway)
            self.validate_exp(exp)
        except ExpiredTokenError as err:
            raise JoseRefused("expired", "the token has expired") from err
        if iat is not None:
            try:
                self.validate_iat(iat)
            except InvalidClaimError as err:
                raise JoseRefused("iat_in_future", "the token was issued in the future") from err
        if nbf is not None:
            try:
                # RFC 7519 §4.1.5: not accepted before nbf
                self.validate_nbf(nbf)
            except InvalidClaimError as err:
                raise JoseRefused("not_yet_valid", "the token is not yet valid") from err
        if self._max_lifetime is not None:
            # issue lifetime, or what is left of it when the token states no iat
            start = iat if iat is not None else float(self.now)
            if exp - start > self._max_lifetime:
                raise JoseRefused("lifetime_too_long", "the token's lifetime is too long")
        return Times(exp, iat, nbf)

    def _date(self, claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
        value = claims.get(name)
        if value is None:
            if required:
                raise JoseRefused(f"missing_{name}", f"'{name}' claim is required")
            return None
        if not is_numeric_date(value, integer=self._integer):
            kind = "an integer NumericDate" if self._integer else "a NumericDate"
            raise JoseRefused(f"invalid_{name}", f"'{name}' must be {kind} in range")
        return value


def audience_values(value: Any) -> tuple[str, ...] | None:
    """RFC 7519 §4.1.3 ``aud``: a string or a non-empty array of non-empty strings; None
    for anything else (absent included)."""
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        return None
    if not all(isinstance(a, str) and a for a in values):
        return None
    return tuple(values)

