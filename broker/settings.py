"""Writ's settings, composed from each package's own (pydantic-settings, env prefix WRIT_).

Nested settings use ``__``: ``WRIT_KEYS__ALG=ES384``. Nothing is built at import time.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.claims.txn_token import TokenProfile
from broker.signing.settings import KeyRingSettings
from broker.tools.settings import ToolSettings


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WRIT_AUDIT_", hide_input_in_errors=True)

    batch_max: int = Field(default=256, ge=1, le=10_000)
    # how long the writer waits for more records before committing a batch
    batch_wait_ms: float = Field(default=0.0, ge=0.0, le=100.0)
    timeout_s: float = Field(default=5.0, gt=0.0, le=60.0)
    # PostgreSQL: the longest one commit may hold a serving process's event loop
    stall_s: float = Field(default=0.75, gt=0.0, le=60.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WRIT_", env_nested_delimiter="__", extra="ignore", hide_input_in_errors=True
    )

    data_dir: Path = Path("writ-data")
    database_url: SecretStr | None = None  # default: sqlite:///<data_dir>/writ.db
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    issuer: str | None = None  # default: http://<host>:<port>
    trust_domain: str = Field(default="dev.writ.local", pattern=r"^[a-z0-9._-]+$")
    dev: bool = False

    txn_token_ttl_s: int = Field(default=300, ge=1, le=3600)
    max_txn_token_ttl_s: int = Field(default=900, ge=1, le=3600)
    svid_leeway_s: int = Field(default=30, ge=0, le=120)
    svid_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    # RFC 7523 §3 item 4: how far ahead a private_key_jwt assertion's exp may be; it bounds
    # the cross-replica replay window (docs/architecture.md#decisions)
    client_assertion_max_lifetime_s: int = Field(default=600, ge=60, le=3600)
    # docs/security.md#jose-and-json-strictness: longest JWT-SVID accepted (exp - iat, or
    # exp - now without iat), and how many audiences it may name (JWT-SVID §7.2: Writ alone)
    svid_max_lifetime_s: int = Field(default=3600, ge=60, le=86400)
    svid_max_audiences: int = Field(default=1, ge=1, le=16)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # all request header names and values together; more answers 431 (docs/security.md)
    max_header_bytes: int = Field(default=16 * 1024, ge=4096, le=64 * 1024)
    # proxies (CIDRs) whose forwarded header names the client; default: none is trusted
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)
    forwarded_header: Literal["x-forwarded-for", "forwarded", "x-real-ip"] = "x-forwarded-for"
    max_token_bytes: int = Field(default=8 * 1024, ge=512, le=64 * 1024)
    max_json_depth: int = Field(default=8, ge=1, le=32)
    snapshot_poll_interval_s: float = Field(default=1.0, gt=0.0, le=60.0)
    # /readyz: how long the database may take to answer SELECT 1 (docs/operations.md)
    readiness_db_timeout_s: float = Field(default=1.0, gt=0.0, le=10.0)
    # docs/delegation.md: actors in one transaction, the current one included
    max_delegation_hops: int = Field(default=5, ge=1, le=32)
    # docs/token-format.md#token-profiles: where a replacement names its delegate
    token_profile: TokenProfile = TokenProfile.writ
    # trusted user-token issuers' JWKS (broker/auth/user_tokens.py)
    issuer_jwks_cache_ttl_s: float = Field(default=300.0, ge=10.0, le=86400.0)
    issuer_jwks_min_refetch_s: float = Field(default=10.0, ge=0.0, le=3600.0)

    # allocations between young-generation collections in a serving process, which also
    # freezes what exists once the app is built (Python's own threshold is 700; 0 leaves the
    # collector untouched); docs/operations.md#memory-and-garbage-collection
    gc_young_threshold: int = Field(default=10_000, ge=0, le=1_000_000)

    keys: KeyRingSettings = Field(default_factory=KeyRingSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    # tool metadata fetching (broker/tools/settings.py, WRIT_TOOLS_*)
    tools: ToolSettings = Field(default_factory=ToolSettings)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        return [str(ipaddress.ip_network(net, strict=False)) for net in value]

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith(("https://", "http://")) or value.endswith("/")
        ):
            raise ValueError("issuer must be an http(s) URL without a trailing slash")
        return value

    @model_validator(mode="after")
    def _ttls(self) -> Settings:
        if self.txn_token_ttl_s > self.max_txn_token_ttl_s:
            raise ValueError("txn_token_ttl_s must not exceed max_txn_token_ttl_s")
        # retired keys stay published for keys.max_token_ttl_s: no token may outlive that
        if self.max_txn_token_ttl_s > self.keys.max_token_ttl_s:
            raise ValueError("max_txn_token_ttl_s must not exceed keys.max_token_ttl_s")
        return self

    @property
    def issuer_url(self) -> str:
        return self.issuer or f"http://{self.host}:{self.port}"

    @property
    def db_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'writ.db'}"
