"""Keys and algorithm allow-lists shared by signing and verification.

Every verify in Writ names its algorithms from these tuples; ``none`` and the HS*
family never appear in any of them (DESIGN §8).
"""

from __future__ import annotations

from typing import Any, Final

from joserfc.jwk import ECKey, OKPKey, RSAKey

from jwks.errors import KeyError_, UnsupportedAlgorithm

#: Algorithms Writ can sign Txn-Tokens and access tokens with.
# RFC 9864: the fully-specified "Ed25519" replaces the deprecated polymorphic "EdDSA".
SIGNING_ALGORITHMS: Final = ("ES256", "ES384", "PS256", "RS256", "Ed25519")
#: Algorithms a verifier of Writ's tokens accepts.
TOKEN_ALGORITHMS: Final = SIGNING_ALGORITHMS
#: SPIFFE JWT-SVID §3: RS, ES and PS at 256/384/512 only.
SVID_ALGORITHMS: Final = (
    "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512",
)
#: Never acceptable, whatever a caller passes.
FORBIDDEN_ALGORITHMS: Final = frozenset({"none", "HS256", "HS384", "HS512"})

AnyKey = ECKey | RSAKey | OKPKey

_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def check_algorithms(algorithms: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Return ``algorithms`` as a tuple, refusing an empty list or a forbidden member."""
    algs = tuple(algorithms)
    if not algs:
        raise UnsupportedAlgorithm("an empty algorithm list allows nothing")
    bad = FORBIDDEN_ALGORITHMS.intersection(a for a in algs) | {
        a for a in algs if a.upper().startswith("HS") or a.lower() == "none"
    }
    if bad:
        raise UnsupportedAlgorithm(f"forbidden algorithm(s): {sorted(bad)}")
    return algs


def generate_key(alg: str) -> AnyKey:
    """Generate a private signing key for ``alg`` (one of SIGNING_ALGORITHMS)."""
    if alg in ("ES256", "ES384"):
        return ECKey.generate_key("P-256" if alg == "ES256" else "P-384", private=True)
    if alg in ("PS256", "RS256"):
        return RSAKey.generate_key(3072, private=True)
    if alg == "Ed25519":
        return OKPKey.generate_key("Ed25519", private=True)
    raise UnsupportedAlgorithm(f"cannot sign with {alg!r}")


def thumbprint(key: AnyKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url), used as ``kid``."""
    return key.thumbprint()


def public_jwk(key: AnyKey, *, alg: str, use: str = "sig") -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid`` = its RFC 7638 thumbprint."""
    return {**key.as_dict(private=False), "kid": thumbprint(key), "alg": alg, "use": use}


def import_public_jwk(data: dict[str, Any]) -> AnyKey:
    """Import a public JWK, refusing symmetric keys and any private member."""
    if not isinstance(data, dict):
        raise KeyError_("a JWK must be a JSON object")
    if _PRIVATE_MEMBERS.intersection(data):
        raise KeyError_("a published key must not carry private members")
    kty = data.get("kty")
    try:
        if kty == "EC":
            return ECKey.import_key(data)
        if kty == "RSA":
            return RSAKey.import_key(data)
        if kty == "OKP":
            return OKPKey.import_key(data)
    except Exception as err:  # joserfc raises several types for a malformed key
        raise KeyError_("malformed public JWK") from err
    raise KeyError_(f"unsupported key type {kty!r}")
