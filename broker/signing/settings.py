"""Settings of the signing key ring (env prefix ``WRIT_KEYS_``).

Nothing here is built at import time; ``broker`` composes this class into its own settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.signing.envelope import KekError, decode_kek
from jwks.keys import SIGNING_ALGORITHMS


class KeyRingSettings(BaseSettings):
    # errors never echo an input: the KEK is one of them
    model_config = SettingsConfigDict(
        env_prefix="WRIT_KEYS_", extra="ignore", hide_input_in_errors=True
    )

    #: Algorithm of newly generated keys; existing keys keep the one they were made with.
    alg: str = "ES256"
    #: Key-encryption key, base64url of 32 random bytes.
    kek: SecretStr | None = None
    #: File holding the KEK (32 raw bytes, or its base64url text).
    kek_file: Path | None = None
    #: Longest lifetime of any token signed with these keys. A retired key stays published
    #: at least this long after retirement so every token it signed can still be verified.
    max_token_ttl_s: int = Field(default=3600, ge=60, le=86400)
    #: Extra publication time on top of ``max_token_ttl_s`` (clock skew, replica lag, caches);
    #: also the least time a next key is published before it may become active.
    publish_grace_s: int = Field(default=300, ge=0, le=86400)
    #: How often a replica checks the database for a rotation.
    refresh_interval_s: float = Field(default=5.0, ge=0.5, le=300.0)

    @field_validator("alg")
    @classmethod
    def _known_alg(cls, value: str) -> str:
        if value not in SIGNING_ALGORITHMS:
            raise ValueError(f"alg must be one of {list(SIGNING_ALGORITHMS)}")
        return value

    @field_validator("kek")
    @classmethod
    def _kek_is_32_bytes(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                decode_kek(value.get_secret_value())
            except KekError:
                raise ValueError("kek must be base64url of 32 random bytes") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kek is not None and self.kek_file is not None:
            raise ValueError("set only one of WRIT_KEYS_KEK and WRIT_KEYS_KEK_FILE")
        # A replica may sign with a retired key until its next refresh; that key must still
        # be published when such a token expires.
        if self.publish_grace_s < self.refresh_interval_s:
            raise ValueError("publish_grace_s must be at least refresh_interval_s")
        return self
