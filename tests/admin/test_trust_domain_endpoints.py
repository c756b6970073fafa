"""Bundle endpoints through the admin API: the https_spiffe and https_web parameters, what is
refused, each domain's refresh status and key count, the metrics, and what ``/readyz``
makes of a partner's unreachable endpoint (nothing) and of its own trust domain's (not
ready, and why)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from broker.admin.tokens import ALL_SCOPES, AdminTokenCreate, create_admin_token
from broker.app import create_app
from broker.cli.dev import DevTrustDomain
from broker.settings import Settings
from registry import store
from registry.models import BundleSourceKind, TrustDomainCreate
from tests.conftest import ISSUER, FrozenClock
from tests.tls import make_pki, make_spiffe_ca, tls_server

PARTNER = "partner.test"
ENDPOINT_ID = f"spiffe://{PARTNER}/spire/server"
CA = make_spiffe_ca(PARTNER)
BOOTSTRAP = {"keys": [CA.bundle_element()]}
UNREACHABLE = "https://127.0.0.1:1/bundle"


def _admin(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        issued = create_admin_token(session, AdminTokenCreate(name="t", scopes=list(ALL_SCOPES)),
                                    now=0.0, by="test")
        session.commit()
    return {"Authorization": f"Bearer {issued.token}"}


def _wait_for_attempt(client: TestClient, name: str) -> Any:
    broker = client.app.state.broker  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while (status := broker.bundles.status().get(name)) is None or status.last_attempt_at is None:
        assert time.monotonic() < deadline, "no refresh attempt"
        time.sleep(0.02)
    return status


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(make_pki().ca_pem)
    return str(path)


# --- what the admin API refuses ------------------------------------------------------


def _refusals(ca_file: str) -> list[Any]:
    spiffe = {"name": PARTNER, "source": "endpoint", "location": "https://b.partner.test/b",
              "endpoint_profile": "https_spiffe", "endpoint_spiffe_id": ENDPOINT_ID,
              "bundle": BOOTSTRAP}
    web = {"name": PARTNER, "source": "endpoint", "location": "https://b.partner.test/b"}
    jwt_only = DevTrustDomain.generate(PARTNER).bundle()
    cases = [
        ({**spiffe, "endpoint_spiffe_id": None},
         "https_spiffe needs the endpoint's SPIFFE ID (endpoint_spiffe_id)"),
        ({**spiffe, "endpoint_spiffe_id": "spiffe://other.test/spire/server"},
         "endpoint SPIFFE ID must be in partner.test (a self-serving bundle endpoint, "
         "SPIFFE Federation §5.2.2.2)"),
        ({**spiffe, "endpoint_spiffe_id": "https://partner.test/x"}, None),
        ({**spiffe, "bundle": None},
         "https_spiffe needs the trust domain's bundle to bootstrap from "
         "(SPIFFE Federation §5.2.2.2)"),
        ({**spiffe, "bundle": jwt_only},
         "the bootstrap bundle has no x509-svid CA to authenticate the endpoint with"),
        ({**spiffe, "ca_file": ca_file},
         "ca_file is for https_web; https_spiffe trusts the bundle's own CAs"),
        ({**web, "endpoint_spiffe_id": ENDPOINT_ID},
         "endpoint_spiffe_id is for https_spiffe endpoints only"),
        ({**web, "bundle": BOOTSTRAP}, "an https_web endpoint takes no bundle; it is fetched"),
        ({**web, "ca_file": "relative/ca.pem"}, "ca_file must be an absolute path"),
        ({**web, "ca_file": "/nonexistent/ca.pem"},
         "ca_file /nonexistent/ca.pem is not a readable PEM file of CA certificates on this "
         "replica"),
        ({"name": PARTNER, "bundle": jwt_only, "endpoint_profile": "https_web"},
         "endpoint_profile, endpoint_spiffe_id and ca_file are for endpoint trust domains only"),
        ({"name": PARTNER, "source": "file", "location": "/b.json", "ca_file": ca_file},
         "endpoint_profile, endpoint_spiffe_id and ca_file are for endpoint trust domains only"),
    ]
    ids = ["spiffe-no-id", "spiffe-id-other-domain", "spiffe-id-not-spiffe", "spiffe-no-bundle",
           "spiffe-bundle-without-ca", "spiffe-with-ca-file", "web-with-spiffe-id",
           "web-with-bundle", "web-ca-file-relative", "web-ca-file-missing", "inline-profile",
           "file-ca-file"]
    return [pytest.param(body, error, id=i) for (body, error), i in zip(cases, ids, strict=True)]


@pytest.mark.parametrize(("body", "error"), _refusals("/tmp/placeholder-ca.pem"))
def test_endpoint_parameters_are_checked(client: TestClient, engine: Engine, ca_file: str,
                                         body: dict[str, Any], error: str | None) -> None:
    if body.get("ca_file") == "/tmp/placeholder-ca.pem":
        body = {**body, "ca_file": ca_file}
    r = client.post("/v1/trust-domains", headers=_admin(engine), json=body)
    assert r.status_code == 422, r.text
    if error is not None:
        assert r.json() == {"error": "invalid_request", "error_description": error}
    else:
        assert r.json()["error_description"].startswith("endpoint SPIFFE ID is malformed")
    assert client.get(f"/v1/trust-domains/{PARTNER}", headers=_admin(engine)).status_code == 404


def test_unknown_profile_is_refused(client: TestClient, engine: Engine) -> None:
    r = client.post("/v1/trust-domains", headers=_admin(engine), json={
        "name": PARTNER, "source": "endpoint", "location": "https://b.partner.test/b",
        "endpoint_profile": "https_dane"})
    assert r.status_code == 422
    assert "https_dane" in r.json()["error_description"]


def test_https_spiffe_is_created_and_its_parameters_shown(client: TestClient,
                                                         engine: Engine) -> None:
    h = _admin(engine)
    r = client.post("/v1/trust-domains", headers=h, json={
        "name": PARTNER, "source": "endpoint", "location": UNREACHABLE,
        "endpoint_profile": "https_spiffe", "endpoint_spiffe_id": ENDPOINT_ID,
        "bundle": BOOTSTRAP})
    assert r.status_code == 201, r.text
    assert {k: r.json()[k] for k in ("source", "location", "endpoint_profile",
                                     "endpoint_spiffe_id", "ca_file")} == {
        "source": "endpoint", "location": UNREACHABLE, "endpoint_profile": "https_spiffe",
        "endpoint_spiffe_id": ENDPOINT_ID, "ca_file": None}
    # switching to https_web keeps the old bootstrap out of the way; a new SPIFFE ID is checked
    r = client.patch(f"/v1/trust-domains/{PARTNER}", headers=h,
                     json={"endpoint_spiffe_id": "spiffe://elsewhere.test/x"})
    assert r.status_code == 422
    r = client.patch(f"/v1/trust-domains/{PARTNER}", headers=h,
                     json={"endpoint_profile": "https_web", "endpoint_spiffe_id": None})
    assert r.status_code == 200, r.text
    assert (r.json()["endpoint_profile"], r.json()["endpoint_spiffe_id"]) == ("https_web", None)


# --- status, key count, metrics and readiness ----------------------------------------


def test_a_working_endpoint_shows_its_keys_and_a_dead_one_its_error(
    client: TestClient, engine: Engine, tmp_path: Path,
) -> None:
    pki = make_pki()
    ca = tmp_path / "partner-ca.pem"
    ca.write_bytes(pki.ca_pem)
    doc = DevTrustDomain.generate(PARTNER).bundle()
    doc["keys"] += DevTrustDomain.generate(PARTNER).bundle()["keys"]
    h = _admin(engine)
    with tls_server(lambda path: (200, {}, json.dumps(doc).encode()), pki) as server:
        r = client.post("/v1/trust-domains", headers=h, json={
            "name": PARTNER, "source": "endpoint", "location": f"{server.url}/b",
            "ca_file": str(ca)})
        assert r.status_code == 201, r.text
        _wait_for_attempt(client, PARTNER)
    r = client.post("/v1/trust-domains", headers=h, json={
        "name": "gone.test", "source": "endpoint", "location": UNREACHABLE})
    assert r.status_code == 201
    _wait_for_attempt(client, "gone.test")

    shown = client.get(f"/v1/trust-domains/{PARTNER}", headers=h).json()
    assert shown["key_count"] == 2  # not 0: the keys this replica holds
    status = shown["status"]
    assert (status["fresh"], status["key_count"], status["last_error"],
            status["consecutive_failures"]) == (True, 2, None, 0)
    assert status["last_refresh_at"] is not None
    gone = client.get("/v1/trust-domains/gone.test", headers=h).json()
    assert (gone["key_count"], gone["status"]["fresh"], gone["status"]["key_count"]) == (
        0, False, None)
    assert gone["status"]["last_error"].startswith("bundle endpoint unreachable")
    assert gone["status"]["consecutive_failures"] >= 1

    # the record every replica and `writ trust-domains show` read
    with Session(engine) as session:
        recorded = store.fetch_trust_domain(session, PARTNER)
    assert recorded is not None and recorded.status is not None
    assert (recorded.key_count, recorded.status.fresh) == (2, True)

    metrics = client.get("/metrics").text
    assert f'writ_trust_bundle_keys{{trust_domain="{PARTNER}"}} 2.0' in metrics
    assert f'writ_trust_bundle_fresh{{trust_domain="{PARTNER}"}} 1.0' in metrics
    assert 'writ_trust_bundle_fresh{trust_domain="gone.test"} 0.0' in metrics
    assert 'writ_trust_bundle_refresh_failures{trust_domain="gone.test"}' in metrics
    assert "BEGIN" not in metrics and '"x"' not in metrics  # no key material

    # a partner's dead endpoint never takes this replica out of the load balancer
    r = client.get("/readyz")
    assert (r.status_code, r.json()["status"]) == (200, "ready")


@pytest.fixture
def own_endpoint_client(tmp_path: Path, db_url: str, engine: Engine,
                        clock: FrozenClock) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, database_url=db_url, issuer=ISSUER, dev=True,
                        trust_domain="own.test")
    with Session(engine) as session:
        store.create_trust_domain(session, TrustDomainCreate(
            name="own.test", source=BundleSourceKind.endpoint, location=UNREACHABLE), now=clock())
        session.commit()
    with TestClient(create_app(settings, engine=engine, clock=clock), base_url=ISSUER) as tc:
        yield tc


def test_readyz_names_its_own_trust_domain_when_its_bundle_is_missing(
    own_endpoint_client: TestClient,
) -> None:
    _wait_for_attempt(own_endpoint_client, "own.test")
    r = own_endpoint_client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    assert body["checks"] == {"database": True, "signing_key": True, "trust_domain": False}
    assert list(body["failed"]) == ["trust_domain"]
    assert body["failed"]["trust_domain"].startswith(
        "no bundle of own.test: bundle endpoint unreachable")
    assert own_endpoint_client.get("/healthz").json() == {"status": "ok"}


def test_a_restart_starts_from_the_last_good_bundle(
    settings: Settings, engine: Engine, seeded: DevTrustDomain, clock: FrozenClock,
    tmp_path: Path,
) -> None:
    pki = make_pki()
    ca = tmp_path / "partner-ca.pem"
    ca.write_bytes(pki.ca_pem)
    doc = DevTrustDomain.generate(PARTNER).bundle()
    with tls_server(lambda path: (200, {}, json.dumps(doc).encode()), pki) as server:
        with Session(engine) as session:
            store.create_trust_domain(session, TrustDomainCreate(
                name=PARTNER, source=BundleSourceKind.endpoint, location=f"{server.url}/b",
                ca_file=str(ca)), now=clock())
            session.commit()
        with TestClient(create_app(settings, engine=engine, clock=clock),
                        base_url=ISSUER) as first:
            assert first.app.state.broker.bundles.refresh(PARTNER)  # type: ignore[attr-defined]
            held = first.app.state.broker.bundles.get(PARTNER)  # type: ignore[attr-defined]
    # the endpoint is gone now; a new process holds the same keys before any fetch
    with TestClient(create_app(settings, engine=engine, clock=clock), base_url=ISSUER) as again:
        broker = again.app.state.broker  # type: ignore[attr-defined]
        bundle = broker.bundles.get(PARTNER)
        assert bundle is not None and bundle.digest == held.digest
        status = _wait_for_attempt(again, PARTNER)
        assert status.last_error.startswith("bundle endpoint unreachable")
        assert broker.bundles.get(PARTNER).digest == held.digest  # kept on failure
