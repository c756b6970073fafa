"""Build hostile JWTs for refusal tests: any header, any alg, any key (or none)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from broker.cli.dev import DevTrustDomain


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, Any], claims: dict[str, Any], *, key: Any = None, secret: bytes = b"k"
) -> str:
    """Sign with ``key`` when the alg is asymmetric, HMAC for HS*, nothing for none."""
    alg = header.get("alg")
    if alg == "none":
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    if isinstance(alg, str) and alg.startswith("HS"):
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384}.get(alg, hashlib.sha512)
        sig = hmac.new(secret, signing_input.encode(), digest).digest()
        return f"{signing_input}.{b64(sig)}"
    if alg == "ES256" and isinstance(key, ECKey):  # any header, even ones joserfc refuses
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
        der = key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
    if alg == "Ed25519":  # a key of the right type; the refusal must come from the alg
        key = OKPKey.generate_key("Ed25519", private=True)
    return jws.serialize_compact(header, json.dumps(claims).encode(), key, algorithms=[alg])


def forge_raw(header: bytes, payload: bytes, key: ECKey) -> str:
    """ES256 over exactly these header and payload bytes: any encoding, duplicate members,
    numbers no JSON encoder writes."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    der = key.private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def raw_json(template: str, values: dict[str, Any], encoding: str = "utf-8") -> bytes:
    """``template`` with ``$NAME`` replaced by the JSON of ``values[NAME]``, encoded."""
    for name, value in values.items():
        template = template.replace(f"${name}", json.dumps(value))
    if encoding == "utf-8-bom":
        return b"\xef\xbb\xbf" + template.encode()
    return template.encode(encoding)


def svid_claims(
    spiffe_id: str, audience: Any, *, now: float | None = None, ttl_s: int = 300
) -> dict[str, Any]:
    t = int(time.time() if now is None else now)
    return {"sub": spiffe_id, "aud": audience, "iat": t, "exp": t + ttl_s, "jti": uuid.uuid4().hex}


def mutated_svid(
    td: DevTrustDomain, spiffe_id: str, audience: str, now: float, spec: dict[str, Any]
) -> str:
    """A JWT-SVID for ``spiffe_id`` altered as ``spec`` (a test vector) says."""
    claims = svid_claims(
        spec.get("sub", spiffe_id), spec.get("aud", audience), now=now, ttl_s=spec.get("ttl_s", 300)
    )
    if "exp_offset" in spec:
        claims["exp"] = int(now) + spec["exp_offset"]
    if "iat_offset" in spec:
        claims["iat"] = int(now) + spec["iat_offset"]
    if "extra_aud" in spec or "extra_aud_first" in spec:
        claims["aud"] = [*spec.get("extra_aud_first", []), claims["aud"],
                         *spec.get("extra_aud", [])]
    for name in spec.get("drop", []):
        claims.pop(name, None)
    claims.update(spec.get("claims", {}))
    header: dict[str, Any] = {
        "alg": spec.get("alg", "ES256"),
        "kid": spec.get("kid", td.kid),
        "typ": spec.get("typ", "JWT"),
        **spec.get("header", {}),
    }
    for name in spec.get("drop_header", []):
        header.pop(name, None)
    key: Any = td._key  # the dev trust domain's key
    if spec.get("foreign_key"):
        key = ECKey.generate_key("P-256", private=True)
    if "header_json" in spec or "payload_json" in spec:
        # raw JSON text, signed as is: $SUB, $AUD, $IAT, $EXP, $KID take the valid values
        values = {"SUB": claims.get("sub"), "AUD": claims.get("aud"), "IAT": claims.get("iat"),
                  "EXP": claims.get("exp"), "KID": header.get("kid")}
        raw_header = raw_json(spec["header_json"], values, spec.get("header_encoding", "utf-8")) \
            if "header_json" in spec else json.dumps(header).encode()
        raw_payload = raw_json(spec["payload_json"], values,
                               spec.get("payload_encoding", "utf-8")) \
            if "payload_json" in spec else json.dumps(claims).encode()
        return forge_raw(raw_header, raw_payload, key)
    token = forge(header, claims, key=key)
    if spec.get("tamper"):
        head, _, sig = token.split(".")
        token = f"{head}.{b64(json.dumps({**claims, 'sub': spiffe_id + 'x'}).encode())}.{sig}"
    if "pad_to" in spec:
        token = token + "A" * (spec["pad_to"] - len(token))
    return token
