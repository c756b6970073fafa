"""A trusted issuer with a CA file of its own: its discovery document and JWKS are fetched
over real loopback TLS, trusting that file's CAs alone (docs/configuration.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from broker.auth.user_tokens import UserTokenError, UserTokenValidator
from registry.issuers import IssuerDiscovery, IssuerView, TrustedIssuerCreate
from tests.idp import TestIssuer
from tests.tls import https_server, make_pki


def _view(issuer: str, ca_file: str | None) -> IssuerView:
    return IssuerView(issuer=issuer, discovery=IssuerDiscovery.oidc, jwks_uri=None,
                      audiences=frozenset({"writ"}), algorithms=("ES256",), ca_file=ca_file)


def _validate(issuer: str, ca_file: str | None, token: str) -> Any:
    validator = UserTokenValidator(prefetch=False, jwks_min_refetch_s=0)
    try:
        view = _view(issuer, ca_file)
        validator.sync({issuer: view})
        return validator.validate(token, {issuer: view})
    finally:
        validator.close()


def test_issuer_ca_file_trusts_that_ca_alone(tmp_path: Path) -> None:
    holder: dict[str, TestIssuer] = {}
    with https_server(lambda path: holder["idp"].handler(path)) as (url, ca_path):
        idp = holder["idp"] = TestIssuer(url)
        token = idp.mint("alice", now=time.time())
        user = _validate(url, ca_path, token)
        assert (user.issuer, user.subject) == (url, "alice")
        fetched = dict(idp.hits)

        other = tmp_path / "other-ca.pem"
        other.write_bytes(make_pki().ca_pem)
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate")
        for ca_file in (str(other), str(tmp_path / "missing.pem"), str(junk), None):
            with pytest.raises(UserTokenError) as refused:
                _validate(url, ca_file, token)
            assert refused.value.reason == "issuer_keys_unavailable", ca_file
        assert dict(idp.hits) == fetched  # no refused client ever read a document


@pytest.mark.parametrize("value", ["ca.pem", "./ca.pem", "~/ca.pem", "/etc/ca\n.pem", ""])
def test_issuer_ca_file_must_be_an_absolute_path(value: str) -> None:
    with pytest.raises(ValueError, match="ca_file must be an absolute path"):
        TrustedIssuerCreate(issuer="https://idp.test", audiences=["writ"], ca_file=value)
