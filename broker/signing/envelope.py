"""Envelope encryption of secrets at rest (AES-256-GCM, NIST SP 800-38D).

Each secret gets a fresh 256-bit data key; the data key encrypts the secret and is itself
wrapped by the key-encryption key (KEK). The caller's ``aad`` (for example a row's primary key)
is bound to both, so a sealed value cannot be moved to another row.

Sealed layout, version 1 (bytes)::

    0x01 | wrap_nonce (12) | wrapped data key + tag (48) | nonce (12) | ciphertext + tag

The KEK never appears in a repr, a log record or an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from jwks.errors import JwksError

KEK_SIZE: Final = 32
_VERSION: Final = b"\x01"
_NONCE: Final = 12
_TAG: Final = 16
_WRAPPED: Final = KEK_SIZE + _TAG
_HEADER: Final = len(_VERSION) + _NONCE + _WRAPPED + _NONCE
_WRAP_LABEL: Final = b"writ-envelope/v1/data-key\x00"
_DATA_LABEL: Final = b"writ-envelope/v1/data\x00"


class EnvelopeError(JwksError):
    """Base of the envelope's errors."""

    code = "envelope_error"


class SealedDataError(EnvelopeError):
    """A sealed value was tampered with, truncated, or sealed under another KEK or ``aad``."""

    code = "sealed_data_invalid"


class KekError(EnvelopeError):
    """The KEK is missing, malformed or unreadable."""

    code = "kek_unavailable"


class KekSource(Protocol):
    """Any settings object naming a KEK (``KeyRingSettings`` and later the vault's)."""

    @property
    def kek(self) -> SecretStr | None: ...

    @property
    def kek_file(self) -> Path | None: ...


def generate_kek() -> bytes:
    """32 random bytes for a new KEK."""
    return os.urandom(KEK_SIZE)


def encode_kek(kek: bytes) -> str:
    """The base64url text form of ``kek``, as ``WRIT_KEYS_KEK`` takes it."""
    _check_kek(kek)
    return base64.urlsafe_b64encode(kek).rstrip(b"=").decode("ascii")


def decode_kek(text: str) -> bytes:
    """Decode base64url text (padding optional) into a 32-byte KEK."""
    stripped = text.strip()
    try:
        raw = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise KekError("the KEK must be base64url text") from None  # never chain the secret
    if len(raw) != KEK_SIZE:
        raise KekError(f"the KEK must decode to {KEK_SIZE} bytes")
    return raw


def _check_kek(kek: bytes) -> None:
    if not isinstance(kek, bytes) or len(kek) != KEK_SIZE:
        raise KekError(f"the KEK must be {KEK_SIZE} bytes (AES-256)")


def seal(kek: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` under a fresh data key wrapped by ``kek``, bound to ``aad``."""
    _check_kek(kek)
    data_key = AESGCM.generate_key(bit_length=256)
    # SP 800-38D §8.2.2: random 96-bit nonces, each key used for one message only
    wrap_nonce, nonce = os.urandom(_NONCE), os.urandom(_NONCE)
    wrapped = AESGCM(kek).encrypt(wrap_nonce, data_key, _WRAP_LABEL + aad)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _DATA_LABEL + aad)
    return b"".join((_VERSION, wrap_nonce, wrapped, nonce, ciphertext))


def open_(kek: bytes, sealed: bytes, aad: bytes) -> bytes:
    """Decrypt a value made by :func:`seal`; :class:`SealedDataError` if it does not verify."""
    _check_kek(kek)
    if len(sealed) < _HEADER + _TAG:
        raise SealedDataError("sealed value is truncated")
    if sealed[:1] != _VERSION:
        raise SealedDataError("unknown sealed value version")
    pos = len(_VERSION)
    wrap_nonce = sealed[pos : pos + _NONCE]
    pos += _NONCE
    wrapped = sealed[pos : pos + _WRAPPED]
    pos += _WRAPPED
    nonce = sealed[pos : pos + _NONCE]
    ciphertext = sealed[pos + _NONCE :]
    try:
        data_key = AESGCM(kek).decrypt(wrap_nonce, wrapped, _WRAP_LABEL + aad)
        return AESGCM(data_key).decrypt(nonce, ciphertext, _DATA_LABEL + aad)
    except InvalidTag:
        raise SealedDataError(
            "sealed value does not verify (tampered, wrong KEK or wrong context)"
        ) from None


def _read_kek_file(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise KekError(f"cannot read the KEK file {str(path)!r}: {err.strerror}") from None
    if len(raw) == KEK_SIZE:
        return raw
    try:
        return decode_kek(raw.decode("ascii"))
    except (UnicodeDecodeError, KekError):
        raise KekError(
            f"the KEK file {str(path)!r} must hold {KEK_SIZE} raw bytes or their base64url text"
        ) from None


def _create_dev_kek(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file with mode 0600; link() publishes it whole or not at all,
    # so two processes starting together agree on one KEK.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kek-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(generate_kek())
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def load_or_create_kek(settings: KekSource, data_dir: Path, *, dev: bool) -> bytes:
    """The KEK from ``settings.kek`` or ``settings.kek_file``; in dev mode only, read or create
    ``<data_dir>/kek`` (32 random bytes, mode 0600)."""
    if settings.kek is not None:
        return decode_kek(settings.kek.get_secret_value())
    if settings.kek_file is not None:
        return _read_kek_file(settings.kek_file)
    if not dev:
        raise KekError(
            "no key-encryption key configured: set WRIT_KEYS_KEK (base64url of 32 random "
            "bytes) or WRIT_KEYS_KEK_FILE; a KEK file is generated only in dev mode"
        )
    path = data_dir / "kek"
    if not path.exists():
        _create_dev_kek(path)
    return _read_kek_file(path)
