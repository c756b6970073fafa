"""Settings of tool metadata fetching (``WRIT_TOOLS_*``; docs/configuration.md)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, FilePath, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ToolSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WRIT_TOOLS_", hide_input_in_errors=True)

    connect_timeout_s: float = Field(default=3.0, gt=0.0, le=30.0)
    read_timeout_s: float = Field(default=5.0, gt=0.0, le=60.0)
    # the whole fetch, however slowly the body trickles in
    fetch_deadline_s: float = Field(default=10.0, gt=0.0, le=120.0)
    # draft-ietf-oauth-client-id-metadata-document suggests 5 KB for a metadata document
    max_document_bytes: int = Field(default=5 * 1024, ge=512, le=256 * 1024)
    # Cache-Control max-age is kept within [cache_min_s, cache_max_s]
    cache_min_s: int = Field(default=60, ge=1, le=86_400)
    cache_max_s: int = Field(default=3600, ge=1, le=7 * 86_400)
    cache_default_s: int = Field(default=300, ge=1, le=7 * 86_400)
    # how long past its freshness a fetched document may serve while refreshes fail
    max_stale_s: int = Field(default=300, ge=0, le=86_400)
    # operator allow-list for internal tools: networks (CIDR) whose special-use addresses
    # may be fetched, and host names that may resolve to private or loopback addresses
    allowed_networks: list[str] = Field(default_factory=list, max_length=64)
    allowed_hosts: list[str] = Field(default_factory=list, max_length=64)
    # PEM bundle of the CAs that sign tool hosts' certificates (default: the system's)
    ca_file: FilePath | None = None

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or len(host) > 253 or any(c in host for c in "/:@ "):
                raise ValueError("allowed_hosts holds bare host names")
        return value

    @model_validator(mode="after")
    def _cache(self) -> ToolSettings:
        if not self.cache_min_s <= self.cache_default_s <= self.cache_max_s:
            raise ValueError("need cache_min_s <= cache_default_s <= cache_max_s")
        return self
