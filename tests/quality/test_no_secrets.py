"""DESIGN §8: no secret, private key, KEK, admin token or whole JWT in any response, log line,
error or audit record. Drives a battery of good and hostile requests, collects everything
Writ said, and searches it."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path

from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from sqlalchemy import Engine, select
from sqlmodel import Session

from broker.admin.tokens import AdminTokenCreate, create_admin_token
from broker.audit.writer import AuditRecord
from broker.cli.dev import DEV_AGENT, DevTrustDomain
from broker.logs import JsonFormatter, RedactingFilter
from broker.signing.envelope import open_
from broker.signing.store import SigningKey
from tests.conftest import FrozenClock
from tests.forge import mutated_svid
from tests.grants.test_token_endpoint import ISSUER, post_token, token_params

JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_nothing_secret_escapes(
    client: TestClient,
    seeded: DevTrustDomain,
    clock: FrozenClock,
    engine: Engine,
    settings: object,
    tmp_path: Path,
) -> None:
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with Session(engine) as s:
            admin = create_admin_token(
                s,
                AdminTokenCreate(
                    name="t",
                    scopes=[
                        "agents:read",
                        "agents:write",
                        "gateways:read",
                        "keys:read",
                        "keys:write",
                        "trust-domains:read",
                    ],
                ),
                now=clock(),
                by="test",
            )
            s.commit()
        auth = {"Authorization": f"Bearer {admin.token}"}
        now = clock()
        good = token_params(seeded, now)
        responses: list[str] = []
        issued_bodies: list[str] = []
        r = post_token(client, good)
        assert r.status_code == 200
        issued_bodies.append(r.text)
        issued = r.json()["access_token"]
        hostile = [
            token_params(
                seeded,
                now,
                subject_token=mutated_svid(seeded, DEV_AGENT, ISSUER, now, {"alg": "none"}),
            ),
            token_params(
                seeded,
                now,
                subject_token=mutated_svid(seeded, DEV_AGENT, ISSUER, now, {"exp_offset": -999}),
            ),
            token_params(seeded, now, scope="demo.read root"),
            token_params(
                seeded,
                now,
                subject_token=issued,
                subject_token_type=("urn:ietf:params:oauth:token-type:txn_token"),
            ),
            token_params(seeded, now, client_assertion=issued),
        ]
        for params in hostile:
            responses.append(post_token(client, params).text)
        for path in (
            "/.well-known/jwks.json",
            "/.well-known/oauth-authorization-server",
            "/readyz",
            "/healthz",
            "/metrics",
            "/v1/keys",
            "/v1/agents",
            "/v1/gateways",
            "/v1/trust-domains",
        ):
            resp = client.get(path, headers=auth)
            responses.append(resp.text + json.dumps(dict(resp.headers)))
        responses.append(
            client.get("/v1/agents", headers={"Authorization": f"Bearer {admin.token}x"}).text
        )
        responses.append(
            client.post("/v1/keys/rotate", headers=auth, params={"force": "true"}).text
        )
        logging.getLogger("writ.test").warning(
            "a careless line with %s and %s", issued, admin.token
        )

        with Session(engine) as s:
            audit = [r.model_dump() for r in s.exec(select(AuditRecord)).scalars()]
            sealed = [(k.kid, k.private_key_sealed) for k in s.exec(select(SigningKey)).scalars()]
        kek = (tmp_path / "kek").read_bytes()
        if len(kek) != 32:
            kek = base64.urlsafe_b64decode(kek.strip() + b"=" * (-len(kek.strip()) % 4))
        from cryptography.hazmat.primitives.serialization import load_der_private_key

        private_values = []
        for kid, blob in sealed:
            key = load_der_private_key(open_(kek, blob, kid.encode()), password=None)
            private_values.append(b64(key.private_numbers().private_value.to_bytes(32, "big")))
        dev_d = ECKey.import_key(
            json.loads((tmp_path / "dev-trust-domain.jwk").read_text())
            if (tmp_path / "dev-trust-domain.jwk").exists()
            else seeded._key.as_dict(private=True)
        ).as_dict(private=True)["d"]
        secrets = [
            admin.token,
            # the secret part after "writ_adm_<id>_" (urlsafe base64 may itself hold "_")
            admin.token.removeprefix("writ_adm_").split("_", 1)[1],
            b64(kek),
            kek.hex(),
            dev_d,
            *private_values,
        ]
        said = {
            "responses": "\n".join(responses),
            "issued": "\n".join(issued_bodies),
            "logs": sink.getvalue(),
            "audit": json.dumps(audit, default=str),
        }
        for where, text in said.items():
            for secret in secrets:
                assert secret not in text, f"a secret reached the {where}"
            if where != "issued":
                assert not JWT.search(text), f"a whole JWT reached the {where}"
        for token in (good["client_assertion"], good["subject_token"]):
            assert all(token not in text for text in said.values())
        assert "[jwt sha256:" in said["logs"] and "[admin token redacted]" in said["logs"]
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_revocation_and_introspection_leak_nothing(
    client: TestClient, seeded: DevTrustDomain, clock: FrozenClock, engine: Engine
) -> None:
    """/revoke, /introspect, /v1/revocations, /v1/resource-servers and /v1/audit: no whole
    token (the one introspected, the caller's SVID, a gateway's assertion) and no admin
    token in any response, log line or audit record."""
    from broker.auth.resource_servers import ResourceServerCreate, create_resource_server
    from tests.revocation_kit import RS, RS_OTHER, TRUST_DOMAIN

    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        with Session(engine) as s:
            admin = create_admin_token(s, AdminTokenCreate(
                name="t", scopes=["revocations:read", "revocations:write", "audit:read",
                                  "resource-servers:read", "resource-servers:write"]),
                now=clock(), by="test")
            create_resource_server(s, ResourceServerCreate(client_id=RS, audiences=[TRUST_DOMAIN]),
                                   now=clock())
            create_resource_server(s, ResourceServerCreate(client_id=RS_OTHER,
                                                           audiences=["https://x.example"]),
                                   now=clock())
            s.commit()
        client.app.state.broker.snapshots.refresh()  # type: ignore[attr-defined]
        auth = {"Authorization": f"Bearer {admin.token}"}
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        now = clock()
        good = token_params(seeded, now)
        tokens = [post_token(client, good).json()["access_token"] for _ in range(3)]
        rs_svid = seeded.mint_svid(RS, ISSUER, now=now)
        other_svid = seeded.mint_svid(RS_OTHER, ISSUER, now=now)
        responses: list[str] = []

        def say(r: object) -> None:
            responses.append(r.text + json.dumps(dict(r.headers)))  # type: ignore[attr-defined]

        def introspect(token: str, svid: str) -> None:
            say(client.post("/introspect", content=f"token={token}",
                            headers={**form, "Authorization": f"Bearer {svid}"}))

        for token in tokens:
            introspect(token, rs_svid)
            introspect(token, other_svid)
        introspect(tokens[0], good["client_assertion"])  # a gateway is no resource server
        say(client.post("/introspect", content=f"token={tokens[0]}",
                        headers={**form, "Authorization": "Basic cnM6c2VjcmV0"}))
        revoke = f"client_assertion_type={good['client_assertion_type']}" \
                 f"&client_assertion={good['client_assertion']}"
        say(client.post("/revoke", content=f"{revoke}&token={tokens[0]}", headers=form))
        say(client.post("/revoke", content=f"{revoke}&token={tokens[0]}x", headers=form))
        say(client.post("/revoke", content=f"token={tokens[1]}", headers=form))
        say(client.post("/v1/revocations", headers=auth,
                        json={"kind": "jti", "value": tokens[2][:40], "reason": "test"}))
        say(client.post("/v1/revocations", headers=auth,
                        json={"kind": "agent", "value": DEV_AGENT}))
        introspect(tokens[1], rs_svid)
        for path in ("/v1/revocations", "/v1/resource-servers", "/v1/audit"):
            say(client.get(path, headers=auth))
        with Session(engine) as s:
            audit = [r.model_dump() for r in s.exec(select(AuditRecord)).scalars()]
        said = {"responses": "\n".join(responses), "logs": sink.getvalue(),
                "audit": json.dumps(audit, default=str)}
        for where, text in said.items():
            secret = admin.token.removeprefix("writ_adm_").split("_", 1)[1]
            assert admin.token not in text and secret not in text
            assert not JWT.search(text), f"a whole JWT reached the {where}"
        assert any(r["reason"] == "revoked.jti" for r in audit)
        assert any(r["reason"] == "revoked.agent" for r in audit)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
