"""Writ's signer against the downstream verifier: what it signs, ``jwks`` accepts, for every
signing algorithm; the header names alg, kid (RFC 7638 thumbprint) and typ; the key never
leaves the object. (tests/jwks/ signs with a stand-in so it runs with writ-jwks alone.)"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from joserfc import jws

from broker.signing.signer import KeySigner
from jwks.client import StaticKeys
from jwks.keys import SIGNING_ALGORITHMS, generate_key, thumbprint
from jwks.verifier import TxnTokenVerifier

VECTORS = json.loads(
    (Path(__file__).parents[1] / "vectors" / "txn_token_refusals.json").read_text()
)


@pytest.mark.parametrize("alg", SIGNING_ALGORITHMS)
def test_verifier_accepts_what_the_signer_signs(alg: str) -> None:
    key = generate_key(alg)
    signer = KeySigner(key, alg)
    token = signer.sign(VECTORS["valid_claims"], typ="txntoken+jwt")

    header = jws.extract_compact(token.encode()).protected
    assert header == {"alg": alg, "kid": thumbprint(key), "typ": "txntoken+jwt"}
    assert signer.kid == thumbprint(key) and signer.alg == alg
    verifier = TxnTokenVerifier(
        StaticKeys({"keys": [signer.public_jwk()]}), issuer=VECTORS["issuer"],
        audience=VECTORS["audience"], clock=lambda: float(VECTORS["now"]),
    )
    assert verifier.verify(token).jti == VECTORS["valid_claims"]["jti"]


def test_signer_hands_out_no_private_key() -> None:
    signer = KeySigner(generate_key("ES256"), "ES256")
    assert "d" not in signer.public_jwk()
    assert repr(signer) == f"KeySigner(kid={signer.kid!r}, alg='ES256')"
    with pytest.raises(TypeError, match="cannot be serialized"):
        pickle.dumps(signer)
