"""The broker's long-lived parts, built once per process by ``create_app``.

Everything the token path reads lives here in memory: the registry snapshot, the trust
bundles, the validated-SVID cache and the signing key. Only the audit writer touches the
database per request.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import uuid_utils
from sqlalchemy import Engine, text
from sqlmodel import Session

from broker.audit.writer import AuditEvent, AuditUnavailable, AuditWriter
from broker.auth.clients import (
    JWT_BEARER,
    JWT_SPIFFE,
    ClientAuthenticator,
    JwtSpiffeAuth,
    PrivateKeyJwtAuth,
)
from broker.auth.own_tokens import OwnTxnTokens
from broker.auth.svid import SvidValidator
from broker.auth.user_tokens import UserTokenValidator
from broker.db import make_engine
from broker.decision.rules import TtlBounds
from broker.grants.autonomous import AutonomousAgentProfile
from broker.grants.base import Grant
from broker.grants.on_behalf_of import OnBehalfOfProfile
from broker.grants.replacement import ReplacementProfile
from broker.grants.token_exchange import GRANT_TYPE, TokenExchangeGrant
from broker.revocation.revoked import RevocationSet
from broker.settings import Settings
from broker.signing.envelope import load_or_create_kek
from broker.signing.keyring import KeyRing
from broker.tools.fetch import ToolFetcher
from broker.tools.refresh import ToolRefresher
from jwks.claims import TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT, TOKEN_TYPE_TXN_TOKEN
from registry import store
from registry.bundles.parse import BundleError, TrustBundle, bundle_document, parse_bundle
from registry.bundles.sources import (
    BundleSource,
    EndpointBundleSource,
    FileBundleSource,
    SpiffeEndpointBundleSource,
    WorkloadApiBundleSource,
)
from registry.bundles.trust import DomainStatus, TrustBundles
from registry.models import BundleStatus, EndpointProfile
from registry.snapshot import RegistrySnapshot, SnapshotHolder, TrustDomainView

log = logging.getLogger(__name__)


@dataclass
class _BundleConfig:
    source: str
    location: str | None
    bundle: str | None
    endpoint_profile: str | None = None
    endpoint_spiffe_id: str | None = None
    ca_file: str | None = None


class Broker:
    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = engine or make_engine(settings.db_url)
        self.issuer = settings.issuer_url
        self.bundles = TrustBundles(clock=clock, on_refresh=self._bundle_refreshed)
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self._bundle_config: dict[str, _BundleConfig] = {}
        # run after every registry refresh, in order; features add their own
        self.change_hooks: list[Callable[[RegistrySnapshot], None]] = [self._sync_bundles]
        # revoked jti, txn, agents, gateways, subjects (broker/revocation/revoked.py), in memory
        self.revocations = RevocationSet()
        self.snapshots = SnapshotHolder(
            self.engine,
            poll_interval_s=settings.snapshot_poll_interval_s,
            on_change=self._on_registry_change,
        )
        kek = load_or_create_kek(settings.keys, settings.data_dir, dev=settings.dev)
        self.keyring = KeyRing(self.engine, kek, settings.keys, clock=clock)
        self.svids = SvidValidator(
            self.bundles,
            leeway_s=settings.svid_leeway_s,
            cache_size=settings.svid_cache_size,
            max_token_bytes=settings.max_token_bytes,
            max_lifetime_s=settings.svid_max_lifetime_s,
            max_audiences=settings.svid_max_audiences,
            clock=clock,
        )
        self.clients = ClientAuthenticator(
            {
                JWT_SPIFFE: JwtSpiffeAuth(self.svids, self.issuer),
                JWT_BEARER: PrivateKeyJwtAuth(
                    (self.issuer, f"{self.issuer}/token"),
                    leeway_s=settings.svid_leeway_s,
                    max_lifetime_s=settings.client_assertion_max_lifetime_s,
                    clock=clock,
                ),
            }
        )
        # users' access tokens from trusted issuers (on-behalf-of); JWKS kept in memory
        self.user_tokens = UserTokenValidator(
            leeway_s=settings.svid_leeway_s,
            max_token_bytes=settings.max_token_bytes,
            jwks_cache_ttl_s=settings.issuer_jwks_cache_ttl_s,
            jwks_min_refetch_s=settings.issuer_jwks_min_refetch_s,
            clock=clock,
        )
        self.change_hooks.append(lambda snap: self.user_tokens.sync(snap.issuers))
        on_behalf_of = OnBehalfOfProfile(self.user_tokens)
        self.grants: dict[str, Grant] = {
            GRANT_TYPE: TokenExchangeGrant(
                {
                    (TOKEN_TYPE_JWT, False): AutonomousAgentProfile(),
                    # RFC 8693 §2.1: subject = the user, actor = the agent
                    (TOKEN_TYPE_ACCESS_TOKEN, True): on_behalf_of,
                    (TOKEN_TYPE_JWT, True): on_behalf_of,
                    # subject = a parent Txn-Token, actor = the delegate (docs/delegation.md)
                    (TOKEN_TYPE_TXN_TOKEN, True): ReplacementProfile(
                        OwnTxnTokens(
                            self.keyring,
                            issuer=self.issuer,
                            audience=settings.trust_domain,
                            clock=clock,
                        ),
                        max_hops=settings.max_delegation_hops,
                        is_revoked=self.revocations.is_revoked,
                    ),
                }
            ),
        }
        self.ttl = TtlBounds(settings.txn_token_ttl_s, settings.max_txn_token_ttl_s)
        self.audit = AuditWriter(
            self.engine,
            batch_max=settings.audit.batch_max,
            batch_wait_ms=settings.audit.batch_wait_ms,
            timeout_s=settings.audit.timeout_s,
            stall_s=settings.audit.stall_s,
            clock=clock,
        )
        # tool metadata (docs/tools.md): fetched and refreshed off the token path
        self.tool_fetcher = ToolFetcher(settings.tools, clock=clock)
        self.tool_refresher = ToolRefresher(
            self.engine, self.tool_fetcher, self.snapshots, clock=clock,
            on_changed=self._tool_document_changed,
            on_held=self._tool_change_held,
        )

    @staticmethod
    def new_id() -> str:
        """A ``txn`` or ``jti``: UUIDv7 (RFC 9562 §5.7), 74 random bits after a millisecond
        timestamp. Time-ordered, so the audit trail's ``txn`` and ``jti`` indexes grow at
        their end instead of at random pages; the time it carries is the token's ``iat``."""
        return uuid_utils.uuid7().hex

    @property
    def snapshot(self) -> RegistrySnapshot:
        return self.snapshots.current

    def start(self) -> None:
        created = self.keyring.bootstrap()
        self.snapshots.refresh(force=True)
        self.audit.start()
        if created:  # DESIGN §7: every key change is an audit record
            self.audit.record_sync(AuditEvent(kind="key", decision="changed",
                                              reason="keys.created",
                                              detail={"keys": created, "by": "bootstrap"}))
        self.snapshots.start()
        self.keyring.start()
        self.bundles.start()
        self.tool_refresher.start()

    def stop(self) -> None:
        self.tool_refresher.stop()
        self.tool_fetcher.close()
        self.bundles.stop()
        self.keyring.stop()
        self.snapshots.stop()
        self.audit.stop()
        self.user_tokens.close()

    def _tool_document_changed(self, tool_id: str, before: str, after: str) -> None:
        # DESIGN §7: a registry change is audited, a background refresh included
        try:
            self.audit.record_sync(AuditEvent(
                kind="admin", decision="changed", reason="tool.document_changed", tool=tool_id,
                detail={"by": "refresh", "previous_hash": before, "document_hash": after}))
        except AuditUnavailable:
            log.warning("tool %s changed but its audit record could not be written", tool_id)

    def _tool_change_held(self, tool_id: str, pending_hash: str,
                          changes: tuple[str, ...]) -> None:
        # docs/tools.md: a security-relevant change waits for a registrar, audited
        try:
            self.audit.record_sync(AuditEvent(
                kind="admin", decision="changed", reason="tool.change_held", tool=tool_id,
                detail={"by": "refresh", "pending_hash": pending_hash,
                        "pending_changes": list(changes)}))
        except AuditUnavailable:
            log.warning("tool %s change held but its audit record could not be written",
                        tool_id)

    def database_ok(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def _on_registry_change(self, snap: RegistrySnapshot) -> None:
        for hook in self.change_hooks:
            hook(snap)

    def _sync_bundles(self, snap: RegistrySnapshot) -> None:
        """Follow the registry's trust domains: inline bundles are installed, other
        sources are configured for the background refresher."""
        now = self.clock()
        for name in set(self._bundle_config) - set(snap.trust_domains):
            self.bundles.remove(name)
            del self._bundle_config[name]
        for name, td in snap.trust_domains.items():
            config = _BundleConfig(td.source, td.location, td.bundle, td.endpoint_profile,
                                   td.endpoint_spiffe_id, td.ca_file)
            if self._bundle_config.get(name) == config:
                continue
            try:
                if td.source == "inline":
                    if name in self._bundle_config:
                        self.bundles.remove(name)  # an earlier source stops refreshing
                    if td.bundle is not None:
                        self.bundles.set(name, parse_bundle(name, td.bundle.encode(), now=now))
                else:
                    source = self._bundle_source(td, now)
                    if source is None:
                        continue
                    # a restart starts from the last good bundle; the refresh follows at once
                    if td.latest_bundle is not None and self.bundles.get(name) is None:
                        self.bundles.set(
                            name, parse_bundle(name, td.latest_bundle.encode(), now=now))
                    self.bundles.add_source(name, source)
                    if td.source == "file":
                        self.bundles.refresh(name)
            except BundleError as err:
                log.warning("trust domain %s: bundle not usable: %s", name, err)
                continue
            self._bundle_config[name] = config

    @staticmethod
    def _bundle_source(td: TrustDomainView, now: float) -> BundleSource | None:
        if td.source == "file" and td.location:
            return FileBundleSource(td.location)
        if td.source == "endpoint" and td.location:
            if td.endpoint_profile == EndpointProfile.https_spiffe:
                # SPIFFE Federation §5.2.2.4: the last bundle fetched, else the bootstrap
                start = td.latest_bundle or td.bundle
                if start is None or td.endpoint_spiffe_id is None:
                    raise BundleError("https_spiffe needs a bootstrap bundle and an "
                                      "endpoint SPIFFE ID")
                return SpiffeEndpointBundleSource(
                    td.location, endpoint_spiffe_id=td.endpoint_spiffe_id,
                    trust_domain=td.name,
                    bootstrap=parse_bundle(td.name, start.encode(), now=now))
            return EndpointBundleSource(td.location, ca_file=td.ca_file)
        if td.source == "workload_api":
            return WorkloadApiBundleSource(td.location)
        return None

    def _bundle_refreshed(
        self, name: str, status: DomainStatus, bundle: TrustBundle | None
    ) -> None:
        """Keep this replica's view of a refresh where every replica and the CLI read it,
        with the last good bundle; a database fault costs only this record."""
        public = bundle_status(status, replica=self.replica)
        latest = None if bundle is None else json.dumps(bundle_document(bundle))
        try:
            with Session(self.engine) as session:
                store.record_bundle_status(session, name, public, latest)
                session.commit()
        except Exception as err:
            log.warning("trust domain %s: refresh status not recorded: %s", name, err)

    def jwks_json(self) -> str:
        return json.dumps(self.keyring.jwks())


def bundle_status(status: DomainStatus, *, replica: str | None = None) -> BundleStatus:
    """What operators see of one trust domain's bundle (never key material)."""
    return BundleStatus(
        fresh=status.fresh,
        key_count=status.key_count,
        x509_authority_count=status.x509_authority_count,
        ignored_elements=status.ignored_elements,
        sequence=status.sequence,
        refresh_hint_s=status.refresh_hint_s,
        last_refresh_at=status.last_refresh_at,
        last_attempt_at=status.last_attempt_at,
        next_refresh_at=status.next_refresh_at,
        last_error=status.last_error,
        consecutive_failures=status.consecutive_failures,
        replica=replica,
    )
