"""Parsing a SPIFFE bundle (Trust Domain and Bundle §4) into the JWT-SVID authorities of one
trust domain; pure apart from logging."""


from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, KeyParameters, RSAKey
from spiffe import JwtBundle, TrustDomain
from spiffe.errors import PySpiffeError

from jwks import spiffe_id
from jwks.errors import InvalidSpiffeId, JwksError
from jwks.keys import SVID_ALGORITHMS

log = logging.getLogger(__name__)

BundleKey = ECKey | RSAKey

MAX_BUNDLE_BYTES: Final = 256 * 1024
JWT_SVID_USE: Final = "jwt-svid"
X509_SVID_USE: Final = "x509-svid"
# key types a SPIFFE SVID can be signed with (JWT-SVID §2.1, X509-SVID §5)
_KNOWN_KTY: Final = frozenset({"EC", "RSA"})

_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# JWT-SVID §2.1: ES256/ES384/ES512 name these curves; RS*/PS* need an RSA key.
_EC_CURVES: Final = frozenset({"secp256r1", "secp384r1", "secp521r1"})
_ALG_CURVE: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_MIN_RSA_BITS: Final = 2048
_MAX_UINT64: Final = 2**64 - 1


class BundleError(JwksError):
    """A trust bundle is malformed or does not belong to the trust domain it was asked for."""

    code = "invalid_bundle"


class BundleFetchError(BundleError):
    """A bundle source could not be read (unreachable, TLS failure, HTTP status, timeout)."""

    code = "bundle_unavailable"


@dataclass(frozen=True, eq=False)
class TrustBundle:
    """The JWT-SVID authorities of one trust domain; compare two bundles by ``digest``."""

    trust_domain: str
    keys: Mapping[str, BundleKey] = field(repr=False)
    refresh_hint_s: int | None
    sequence: int | None
    fetched_at: float
    digest: str
    # X509-SVID §6.2: the CA certificates (DER) of the x509-svid elements; they authenticate
    # an https_spiffe bundle endpoint of this trust domain (SPIFFE Federation §5.2.2.4)
    x509_authorities: tuple[bytes, ...] = field(default=(), repr=False)
    # elements ignored under Trust Domain and Bundle §4.1.3 / §4.2 (reasons, no key material)
    ignored: tuple[str, ...] = ()


def parse_trust_domain(name: str) -> str:
    """Return ``name`` if it is a trust domain name in canonical form (SPIFFE-ID §2.1),
    checked by the one SPIFFE ID parser (``jwks.spiffe_id``)."""
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise BundleError("trust domain name must be a string of 1 to 255 characters")
    try:
        return spiffe_id.parse_trust_domain(name)
    except InvalidSpiffeId as err:
        bare = name.lower().removeprefix("spiffe://")
        if bare != name and spiffe_id.is_spiffe_id(f"spiffe://{bare}"):
            # the name, repr'd: a canonical spelling exists and the operator should see it
            raise BundleError(f"trust domain must be a bare lowercase name, not {name!r}") from err
        raise BundleError(f"malformed trust domain name: {err}") from err


def parse_bundle(
    trust_domain: str, data: bytes, *, now: float, max_bytes: int = MAX_BUNDLE_BYTES
) -> TrustBundle:
    """Parse a SPIFFE bundle (a JWK Set) into the JWT-SVID keys of ``trust_domain``."""
    td = parse_trust_domain(trust_domain)
    if not isinstance(data, bytes | bytearray):
        raise BundleError("bundle must be bytes")
    if len(data) > max_bytes:
        raise BundleError(f"bundle is larger than the {max_bytes}-byte cap")
    try:
        doc = json.loads(
            bytes(data).decode("utf-8"),
            object_pairs_hook=_no_duplicate_members,
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BundleError(f"bundle is not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise BundleError("bundle must be a JSON object")
    # Trust Domain and Bundle §4.1.3: the keys parameter MUST be present.
    entries = doc.get("keys")
    if not isinstance(entries, list):
        raise BundleError("bundle must have a 'keys' array")
    refresh_hint = _optional_uint(doc, "spiffe_refresh_hint")
    sequence = _optional_uint(doc, "spiffe_sequence")

    jwt_entries: dict[str, dict[str, Any]] = {}
    x509_authorities: list[bytes] = []
    ignored: list[str] = []
    for index, entry in enumerate(entries):
        try:
            use = _check_entry(index, entry)
        except _Ignored as why:
            # §4.1.3, §4.2.1, §4.2.2: an element a client must ignore; the rest still counts
            reason = f"keys[{index}] ignored: {why}"
            log.warning("trust bundle of %s: %s", td, reason)
            ignored.append(reason)
            continue
        if use == X509_SVID_USE:
            der = _x509_authority(index, entry)
            if der is None:
                reason = f"keys[{index}] ignored: x509-svid element without a usable x5c"
                log.warning("trust bundle of %s: %s", td, reason)
                ignored.append(reason)
            elif der not in x509_authorities:
                x509_authorities.append(der)
            continue
        kid = entry["kid"]
        if kid in jwt_entries:
            raise BundleError(f"keys[{index}]: duplicate kid {kid!r}")
        jwt_entries[kid] = entry

    # pyspiffe parses the JWT authorities too; it silently skips keys it cannot use,
    # so a kid missing from its answer is an error here.
    filtered = json.dumps({"keys": list(jwt_entries.values())}).encode()
    try:
        authorities = JwtBundle.parse(TrustDomain(td), filtered).jwt_authorities
    except PySpiffeError as err:
        raise BundleError(f"JWT authorities rejected: {err}") from err
    missing = sorted(set(jwt_entries) - set(authorities))
    if missing:
        raise BundleError(f"unusable jwt-svid key(s): {missing}")
    keys = {
        kid: _import_authority(kid, authorities[kid], alg=jwt_entries[kid].get("alg"))
        for kid in jwt_entries
    }
    return _make_bundle(
        td, keys, refresh_hint=refresh_hint, sequence=sequence, now=now,
        x509_authorities=tuple(x509_authorities), ignored=tuple(ignored),
    )


def bundle_from_authorities(
    trust_domain: str, authorities: Mapping[str, Any], *, now: float
) -> TrustBundle:
    """Build a bundle from pyspiffe's ``JwtBundle.jwt_authorities`` (kid -> public key)."""
    td = parse_trust_domain(trust_domain)
    keys = {kid: _import_authority(kid, key, alg=None) for kid, key in authorities.items()}
    return _make_bundle(td, keys, refresh_hint=None, sequence=None, now=now)


class _Ignored(Exception):
    """A JWK element that a client must ignore; the message says why (no key material)."""


def bundle_document(bundle: TrustBundle) -> dict[str, Any]:
    """``bundle`` as a SPIFFE bundle (Trust Domain and Bundle §4) that ``parse_bundle``
    reads back: its jwt-svid keys and x509-svid CA certificates, public members only."""
    keys: list[dict[str, Any]] = []
    for der in bundle.x509_authorities:
        public = x509.load_der_x509_certificate(der).public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECKey.import_key(public).as_dict(private=False)
        elif isinstance(public, rsa.RSAPublicKey):
            jwk = RSAKey.import_key(public).as_dict(private=False)
        else:  # never kept by parse_bundle
            continue
        # X509-SVID §6.1: use x509-svid, no kid, the certificate in x5c
        jwk.pop("kid", None)
        keys.append({**jwk, "use": X509_SVID_USE, "x5c": [base64.b64encode(der).decode()]})
    for kid, key in bundle.keys.items():
        keys.append({**key.as_dict(private=False), "kid": kid, "use": JWT_SVID_USE})
    doc: dict[str, Any] = {"keys": keys}
    if bundle.sequence is not None:
        doc["spiffe_sequence"] = bundle.sequence
    if bundle.refresh_hint_s is not None:
        doc["spiffe_refresh_hint"] = bundle.refresh_hint_s
    return doc


def _check_entry(index: int, entry: Any) -> str:
    """Validate one JWK of the set and return its use (``jwt-svid`` or ``x509-svid``).

    Raises _Ignored for an element a client must ignore, and BundleError for one that
    condemns the whole bundle.
    """
    where = f"keys[{index}]"
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: a JWK must be a JSON object")
    kty = entry.get("kty")
    # Hardening beyond §4.1.3 (docs/security.md): a publisher that puts a shared secret or a
    # private key into a public bundle is not trusted with any of its other keys either.
    if kty == "oct":
        raise BundleError(f"{where}: symmetric keys have no place in a trust bundle")
    if _PRIVATE_MEMBERS.intersection(entry):
        raise BundleError(f"{where}: a trust bundle must not carry private key members")
    # §4.2.1: kty MUST be set; an unknown key type -> ignore the entire JWK element
    if not isinstance(kty, str) or not kty:
        raise _Ignored("kty missing (Trust Domain and Bundle §4.2.1)")
    if kty not in _KNOWN_KTY:
        raise _Ignored(f"unknown kty {_shown(kty)} (Trust Domain and Bundle §4.2.1)")
    # §4.2.2: a missing or unknown use -> ignore the entire JWK element
    use = entry.get("use")
    if not isinstance(use, str) or not use:
        raise _Ignored("use missing (Trust Domain and Bundle §4.2.2)")
    if use == X509_SVID_USE:
        return use
    if use != JWT_SVID_USE:
        raise _Ignored(f"unknown use {_shown(use)} (Trust Domain and Bundle §4.2.2)")
    # JWT-SVID §6.1: the kid of a jwt-svid element MUST be set
    kid = entry.get("kid")
    if not isinstance(kid, str) or not kid:
        raise BundleError(f"{where}: a jwt-svid key must have a non-empty kid")
    alg = entry.get("alg")
    if alg is not None:
        if alg not in SVID_ALGORITHMS:
            raise BundleError(f"{where}: alg {alg!r} is not a JWT-SVID algorithm (§2.1)")
        fits = _ALG_CURVE.get(alg) == entry.get("crv") if kty == "EC" else alg[:2] in ("RS", "PS")
        if not fits:
            raise BundleError(f"{where}: alg {alg!r} does not fit a {kty} key")
    return use


def _x509_authority(index: int, entry: dict[str, Any]) -> bytes | None:
    """X509-SVID §6.2: the first x5c value is the CA certificate; no usable x5c -> ignore."""
    x5c = entry.get("x5c")
    if not isinstance(x5c, list) or not x5c or not isinstance(x5c[0], str):
        return None
    try:
        der = base64.b64decode(x5c[0], validate=True)
        cert = x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError):
        return None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None
    # X509-SVID §4.1: a signing certificate MUST set the CA flag
    if not constraints.ca:
        return None
    # §4.2.1: the element's key type must be one this client knows
    public = cert.public_key()
    return der if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) else None


def _shown(value: str) -> str:
    """A short, printable rendering of a foreign string for a log line."""
    return repr(value[:32])


def _import_authority(kid: str, key: Any, *, alg: str | None) -> BundleKey:
    params: KeyParameters = {"kid": kid}
    if alg is not None:
        params["alg"] = alg
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVES:
            raise BundleError(f"key {kid!r}: curve {key.curve.name} is not allowed (JWT-SVID §2.1)")
        return ECKey.import_key(key, params)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise BundleError(f"key {kid!r}: RSA keys need at least {_MIN_RSA_BITS} bits")
        return RSAKey.import_key(key, params)
    raise BundleError(f"key {kid!r}: only EC and RSA keys verify JWT-SVIDs (§2.1)")


def _make_bundle(
    td: str,
    keys: dict[str, BundleKey],
    *,
    refresh_hint: int | None,
    sequence: int | None,
    now: float,
    x509_authorities: tuple[bytes, ...] = (),
    ignored: tuple[str, ...] = (),
) -> TrustBundle:
    canonical = json.dumps(
        sorted([kid, key.thumbprint(), key.alg or ""] for kid, key in keys.items()),
        separators=(",", ":"),
    )
    return TrustBundle(
        trust_domain=td,
        keys=MappingProxyType(keys),
        refresh_hint_s=refresh_hint,
        sequence=sequence,
        fetched_at=now,
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
        x509_authorities=x509_authorities,
        ignored=ignored,
    )


def _optional_uint(doc: dict[str, Any], name: str) -> int | None:
    # Trust Domain and Bundle §4.1.1, §4.1.2: integers when set (64-bit for the sequence).
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_UINT64:
        raise BundleError(f"{name} must be a non-negative integer")
    return value


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate member {name!r}")
        out[name] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
