"""Envelope encryption at rest: AES-256-GCM data keys wrapped by the KEK."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from broker.signing.envelope import (
    KEK_SIZE,
    KekError,
    SealedDataError,
    decode_kek,
    encode_kek,
    generate_kek,
    load_or_create_kek,
    open_,
    seal,
)
from broker.signing.settings import KeyRingSettings

AAD = b"kid-1"

# v1 layout: version | wrap nonce | wrapped data key | wrap tag | nonce | ciphertext | tag
PARTS = {
    "version": 0,
    "wrap_nonce": 5,
    "wrapped_data_key": 20,
    "wrap_tag": 50,
    "nonce": 65,
    "ciphertext": 80,
    "tag": -3,
}


@pytest.fixture(autouse=True)
def _no_kek_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WRIT_KEYS_"):
            monkeypatch.delenv(name)


@pytest.fixture
def kek() -> bytes:
    return generate_kek()


def _kek_texts(kek: bytes) -> list[str]:
    return [kek.hex(), encode_kek(kek), base64.b64encode(kek).decode(), repr(kek)]


@pytest.mark.parametrize("plaintext", [b"", b"x", os.urandom(5000)], ids=["empty", "1", "5000"])
def test_round_trip(kek: bytes, plaintext: bytes) -> None:
    sealed = seal(kek, plaintext, AAD)
    assert open_(kek, sealed, AAD) == plaintext
    assert sealed[:1] == b"\x01"


def test_each_seal_uses_fresh_data_key_and_nonces(kek: bytes) -> None:
    a, b = seal(kek, b"secret", AAD), seal(kek, b"secret", AAD)
    assert a != b
    assert a[1:13] != b[1:13] and a[61:73] != b[61:73]
    assert b"secret" not in a


@pytest.mark.parametrize("offset", PARTS.values(), ids=PARTS.keys())
def test_tampering_with_any_part_is_refused(kek: bytes, offset: int) -> None:
    sealed = bytearray(seal(kek, b"a private key, say" * 4, AAD))
    sealed[offset] ^= 0x01
    with pytest.raises(SealedDataError):
        open_(kek, bytes(sealed), AAD)


@pytest.mark.parametrize(
    "cut", [lambda s: s[:-1], lambda s: s[:10], lambda s: b"", lambda s: s + b"\0"],
    ids=["last-byte", "header-only", "empty", "extended"],
)
def test_truncated_or_extended_is_refused(kek: bytes, cut: object) -> None:
    sealed = seal(kek, b"payload", AAD)
    with pytest.raises(SealedDataError):
        open_(kek, cut(sealed), AAD)  # type: ignore[operator]


def test_wrong_kek_is_refused_without_naming_either(kek: bytes) -> None:
    other = generate_kek()
    sealed = seal(kek, b"payload", AAD)
    with pytest.raises(SealedDataError) as info:
        open_(other, sealed, AAD)
    message = str(info.value) + repr(info.value)
    for text in _kek_texts(kek) + _kek_texts(other):
        assert text not in message
    assert info.value.__cause__ is None


def test_sealed_value_cannot_move_to_another_row(kek: bytes) -> None:
    sealed = seal(kek, b"payload", b"kid-1")
    with pytest.raises(SealedDataError):
        open_(kek, sealed, b"kid-2")
    with pytest.raises(SealedDataError):
        open_(kek, sealed, b"")


@pytest.mark.parametrize("bad", [b"", b"\0" * 16, b"\0" * 31, b"\0" * 33], ids=len)
def test_kek_must_be_256_bits(bad: bytes) -> None:
    with pytest.raises(KekError):
        seal(bad, b"x", AAD)
    with pytest.raises(KekError):
        open_(bad, b"\x01" + b"\0" * 100, AAD)


def test_kek_text_round_trip(kek: bytes) -> None:
    text = encode_kek(kek)
    assert len(text) == 43 and "=" not in text
    assert decode_kek(text) == kek
    assert decode_kek(text + "=\n") == kek
    with pytest.raises(KekError):
        decode_kek(encode_kek(kek)[:-4])
    with pytest.raises(KekError):
        decode_kek("not base64 !")


# --- load_or_create_kek -----------------------------------------------------------------


def test_kek_from_settings(kek: bytes, tmp_path: Path) -> None:
    settings = KeyRingSettings(kek=SecretStr(encode_kek(kek)))
    assert load_or_create_kek(settings, tmp_path, dev=False) == kek
    assert not (tmp_path / "kek").exists()


def test_kek_from_environment(kek: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRIT_KEYS_KEK", encode_kek(kek))
    assert load_or_create_kek(KeyRingSettings(), tmp_path, dev=False) == kek


@pytest.mark.parametrize("form", ["raw", "base64url"])
def test_kek_from_file(kek: bytes, tmp_path: Path, form: str) -> None:
    path = tmp_path / "kek.bin"
    path.write_bytes(kek if form == "raw" else encode_kek(kek).encode() + b"\n")
    settings = KeyRingSettings(kek_file=path)
    assert load_or_create_kek(settings, tmp_path, dev=False) == kek


def test_unreadable_or_malformed_kek_file(tmp_path: Path) -> None:
    with pytest.raises(KekError, match="cannot read"):
        load_or_create_kek(KeyRingSettings(kek_file=tmp_path / "absent"), tmp_path, dev=True)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\0" * 16)
    with pytest.raises(KekError, match="32 raw bytes"):
        load_or_create_kek(KeyRingSettings(kek_file=bad), tmp_path, dev=True)


def test_dev_mode_creates_kek_file_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_or_create_kek(KeyRingSettings(), data_dir, dev=True)
    path = data_dir / "kek"
    assert len(first) == KEK_SIZE
    assert path.read_bytes() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_kek(KeyRingSettings(), data_dir, dev=True) == first
    assert sorted(p.name for p in data_dir.iterdir()) == ["kek"]


def test_dev_mode_processes_starting_together_agree(tmp_path: Path) -> None:
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        results.append(load_or_create_kek(KeyRingSettings(), tmp_path, dev=True))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1


def test_outside_dev_mode_no_kek_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KekError) as info:
        load_or_create_kek(KeyRingSettings(), tmp_path, dev=False)
    assert "WRIT_KEYS_KEK" in str(info.value)
    assert "WRIT_KEYS_KEK_FILE" in str(info.value)
    assert not (tmp_path / "kek").exists()


def test_settings_never_show_the_kek(kek: bytes, tmp_path: Path) -> None:
    settings = KeyRingSettings(kek=SecretStr(encode_kek(kek)))
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for text in _kek_texts(kek):
        assert text not in shown


def test_malformed_kek_setting_is_refused_without_echo() -> None:
    with pytest.raises(ValidationError) as info:
        KeyRingSettings(kek=SecretStr("c2hvcnQtYnV0LXNlY3JldA"))
    assert "c2hvcnQtYnV0LXNlY3JldA" not in str(info.value)


def test_kek_and_kek_file_are_exclusive(kek: bytes, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="only one of"):
        KeyRingSettings(kek=SecretStr(encode_kek(kek)), kek_file=tmp_path / "kek")
