"""Bundle endpoints over real loopback TLS: ``https_spiffe`` (the endpoint's X509-SVID,
checked against its own trust domain's bundle) and ``https_web`` with a per-source CA file.

Every server here is a real HTTPS server (tests/tls.py); its certificate is an X509-SVID
issued by a throwaway SPIFFE CA, switched while it runs to follow a CA rotation.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from registry.bundles.parse import BundleError, TrustBundle, parse_bundle
from registry.bundles.sources import (
    EndpointBundleSource,
    SpiffeEndpointBundleSource,
    check_endpoint_spiffe_id,
)
from registry.bundles.trust import TrustBundles
from tests.tls import Pki, SpiffeCa, TlsServer, make_pki, make_spiffe_ca, tls_server

TD = "partner.test"
ENDPOINT_ID = f"spiffe://{TD}/spire/server"
NOW = 1_750_000_000.0


@cache
def _key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


def _jwk(kid: str) -> dict[str, Any]:
    return {**_key(kid).as_dict(private=False), "use": "jwt-svid", "kid": kid}


def _bundle(cas: list[SpiffeCa], kids: list[str], sequence: int = 1) -> dict[str, Any]:
    return {"spiffe_sequence": sequence, "spiffe_refresh_hint": 60,
            "keys": [ca.bundle_element() for ca in cas] + [_jwk(k) for k in kids]}


def _parsed(doc: dict[str, Any]) -> TrustBundle:
    return parse_bundle(TD, json.dumps(doc).encode(), now=NOW)


class Partner:
    """A partner trust domain: its CA, the bundle its endpoint serves, and the server."""

    def __init__(self, server: TlsServer, ca: SpiffeCa, served: dict[str, Any]) -> None:
        self.server, self.ca, self.served = server, ca, served
        self.hits = 0

    @property
    def url(self) -> str:
        return self.server.url + "/bundle"

    def source(self, bootstrap: dict[str, Any] | None = None,
               endpoint_id: str = ENDPOINT_ID) -> SpiffeEndpointBundleSource:
        return SpiffeEndpointBundleSource(
            self.url, endpoint_spiffe_id=endpoint_id, trust_domain=TD,
            bootstrap=_parsed(bootstrap or _bundle([self.ca], [])))


@pytest.fixture
def partner() -> Iterator[Partner]:
    ca = make_spiffe_ca(TD)
    state: dict[str, Partner] = {}

    def handler(path: str) -> tuple[int, dict[str, str], bytes]:
        state["p"].hits += 1
        return 200, {"Content-Type": "application/json"}, json.dumps(state["p"].served).encode()

    with tls_server(handler, ca.issue(ENDPOINT_ID)) as server:
        state["p"] = Partner(server, ca, _bundle([ca], ["k1"]))
        yield state["p"]


def _refused(source: SpiffeEndpointBundleSource | EndpointBundleSource) -> str:
    with TrustBundles() as store:
        store.add_source(TD, source)
        assert not store.refresh(TD)
        assert store.keys_for(TD) is None
        return store.status()[TD].last_error or ""


# --- https_spiffe --------------------------------------------------------------------


def test_https_spiffe_accepts_the_endpoint_svid(partner: Partner) -> None:
    bundle = partner.source().fetch(TD, now=NOW)
    assert list(bundle.keys) == ["k1"]
    assert len(bundle.x509_authorities) == 1
    assert partner.hits == 1


@pytest.mark.parametrize("served_id", [
    f"spiffe://{TD}/spire/agent",         # another workload of the same trust domain
    f"spiffe://{TD}/spire/server/x",      # a longer path
    "spiffe://other.test/spire/server",   # another trust domain, the same CA
], ids=["other-path", "longer-path", "other-trust-domain"])
def test_https_spiffe_refuses_a_wrong_spiffe_id(partner: Partner, served_id: str) -> None:
    partner.server.use(partner.ca.issue(served_id))
    error = _refused(partner.source())
    assert error == (f"bundle endpoint is {served_id}, not {ENDPOINT_ID} "
                     "(SPIFFE Federation §5.2.2.4)")
    assert partner.hits == 0  # the body of a wrong server is never asked for


def test_https_spiffe_refuses_a_certificate_that_is_no_svid(partner: Partner) -> None:
    web = make_pki()  # a Web PKI certificate: DNS and IP names, no SPIFFE ID, another CA
    partner.server.use(web)
    assert "TLS certificate not trusted" in _refused(partner.source())
    # the same name under the trust domain's own CA, still no URI SAN: not an X509-SVID
    dns_only = _issue_dns_only(partner.ca)
    partner.server.use(dns_only)
    assert _refused(partner.source()) == (
        f"bundle endpoint is not an X509-SVID, not {ENDPOINT_ID} (SPIFFE Federation §5.2.2.4)")
    assert partner.hits == 0


def test_https_spiffe_refuses_another_trust_domains_ca(partner: Partner) -> None:
    impostor = make_spiffe_ca(TD)  # same name, other key: not in the bootstrap bundle
    partner.server.use(impostor.issue(ENDPOINT_ID))
    error = _refused(partner.source())
    assert error.startswith("bundle endpoint unreachable: TLS certificate not trusted")
    assert partner.hits == 0


@pytest.mark.parametrize("window", ["expired", "not-yet-valid"])
def test_https_spiffe_refuses_an_svid_out_of_its_validity(partner: Partner, window: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    hour = datetime.timedelta(hours=1)
    span = (now - 2 * hour, now - hour) if window == "expired" else (now + hour, now + 2 * hour)
    partner.server.use(partner.ca.issue(ENDPOINT_ID, not_before=span[0], not_after=span[1]))
    reason = "certificate has expired" if window == "expired" else "certificate is not yet valid"
    assert _refused(partner.source()) == (
        f"bundle endpoint unreachable: TLS certificate not trusted: {reason}")


def test_https_spiffe_without_an_x509_authority_fails_closed(partner: Partner) -> None:
    source = partner.source(bootstrap={"keys": [_jwk("k1")]})
    assert _refused(source) == (
        f"no X.509 authority of {TD} to authenticate its bundle endpoint")
    assert partner.hits == 0


def test_https_spiffe_follows_a_ca_rotation_from_the_fetched_bundle(partner: Partner) -> None:
    source = partner.source()  # bootstrapped with the first CA only
    new_ca = make_spiffe_ca(TD)
    with TrustBundles(clock=lambda: NOW) as store:
        store.add_source(TD, source)
        # the partner publishes its next CA ahead of use (SPIFFE Federation §4.2)
        partner.served = _bundle([partner.ca, new_ca], ["k1"], sequence=2)
        assert store.refresh(TD)
        assert len(source.x509_authorities) == 2

        # the endpoint now serves an X509-SVID of the new CA: trusted from the fetched bundle
        partner.server.use(new_ca.issue(ENDPOINT_ID))
        partner.served = _bundle([new_ca], ["k2"], sequence=3)
        assert store.refresh(TD)
        assert list(store.keys_for(TD) or ()) == ["k2"]
        assert store.get(TD).x509_authorities == source.x509_authorities  # type: ignore[union-attr]

        # the old CA is retired: an endpoint still presenting its SVID is no longer trusted
        partner.server.use(partner.ca.issue(ENDPOINT_ID))
        assert not store.refresh(TD)
        assert "TLS certificate not trusted" in (store.status()[TD].last_error or "")
        assert list(store.keys_for(TD) or ()) == ["k2"]  # the last good bundle is kept

    # a source that only knows the bootstrap bundle cannot follow the rotation
    partner.server.use(new_ca.issue(ENDPOINT_ID))
    assert "TLS certificate not trusted" in _refused(partner.source())


def test_https_spiffe_follows_a_jwt_key_rotation(partner: Partner) -> None:
    with TrustBundles(clock=lambda: NOW) as store:
        store.add_source(TD, partner.source())
        assert store.refresh(TD)
        version = store.version
        partner.served = _bundle([partner.ca], ["k1", "k2"], sequence=2)
        assert store.refresh(TD)
        partner.served = _bundle([partner.ca], ["k2"], sequence=3)
        assert store.refresh(TD)
        assert list(store.keys_for(TD) or ()) == ["k2"]
        assert store.version == version + 2


@pytest.mark.parametrize(("value", "error"), [
    ("spiffe://other.test/spire/server", "must be in partner.test"),
    (f"spiffe://{TD.upper()}/spire/server", "canonical form"),
    (f"https://{TD}/spire/server", "malformed"),
    (f"spiffe://{TD}/a/../b", "malformed"),
    (f"spiffe://{TD}/spire/server?x=1", "malformed"),
    ("", "malformed"),
], ids=["other-domain", "uppercase", "https-scheme", "dot-segment", "query", "empty"])
def test_endpoint_spiffe_id_is_checked(value: str, error: str) -> None:
    with pytest.raises(BundleError, match=error):
        check_endpoint_spiffe_id(value, TD)


def test_bootstrap_bundle_must_be_the_trust_domains_own() -> None:
    other = parse_bundle("other.test", b'{"keys": []}', now=NOW)
    with pytest.raises(BundleError, match=r"bootstrap bundle of other\.test offered"):
        SpiffeEndpointBundleSource("https://127.0.0.1:1/b", endpoint_spiffe_id=ENDPOINT_ID,
                                   trust_domain=TD, bootstrap=other)


# --- https_web with a per-source CA file ---------------------------------------------


def test_https_web_ca_file_trusts_that_ca_only(tmp_path: Path) -> None:
    pki = make_pki()
    doc = json.dumps(_bundle([], ["w1"])).encode()
    with tls_server(lambda path: (200, {}, doc), pki) as server:
        ca_file = tmp_path / "partner-ca.pem"
        ca_file.write_bytes(pki.ca_pem)
        source = EndpointBundleSource(server.url + "/b", ca_file=ca_file)
        assert list(source.fetch(TD, now=NOW).keys) == ["w1"]

        other = tmp_path / "other-ca.pem"
        other.write_bytes(make_pki().ca_pem)
        assert "TLS certificate not trusted" in _refused(
            EndpointBundleSource(server.url + "/b", ca_file=other))
        assert "TLS certificate not trusted" in _refused(EndpointBundleSource(server.url + "/b"))
        # a missing or broken CA file is a refresh error, never the system store instead
        assert _refused(EndpointBundleSource(server.url + "/b", ca_file=tmp_path / "gone.pem")
                        ).startswith(f"cannot load the CA file {tmp_path / 'gone.pem'}")
        (tmp_path / "junk.pem").write_text("not a certificate")
        assert _refused(EndpointBundleSource(server.url + "/b", ca_file=tmp_path / "junk.pem")
                        ).startswith("cannot load the CA file")


def _issue_dns_only(ca: SpiffeCa) -> Pki:
    """A leaf of ``ca`` naming localhost by DNS, with no SPIFFE ID."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Pki(ca.cert.public_bytes(serialization.Encoding.PEM),
               cert.public_bytes(serialization.Encoding.PEM),
               key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()))
