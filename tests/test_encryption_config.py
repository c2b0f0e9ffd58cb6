"""Encryption settings: master keys from a file or the environment, and every way they can
be wrong, each with an error naming what is wrong. No server needed."""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatkit_mongo.encryption import (
    DEFAULT_LOCAL_KEY_VARIABLE,
    LOCAL_KEY_BYTES,
    Encryption,
    generate_local_master_key,
)
from chatkit_mongo.errors import EncryptionConfigError

KEY = bytes(range(LOCAL_KEY_BYTES))


def test_a_generated_key_loads_from_a_file_and_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = generate_local_master_key()
    key = base64.b64decode(text)
    assert len(key) == LOCAL_KEY_BYTES
    assert generate_local_master_key() != text
    path = tmp_path / "master.key"
    path.write_text(text + "\n")
    assert Encryption.local_from_file(path).kms_providers == {"local": {"key": key}}
    monkeypatch.setenv(DEFAULT_LOCAL_KEY_VARIABLE, text)
    assert Encryption.local_from_env().kms_providers == {"local": {"key": key}}


def test_a_file_of_96_raw_bytes_is_the_key(tmp_path: Path) -> None:
    path = tmp_path / "raw.key"
    path.write_bytes(KEY)
    assert Encryption.local_from_file(path).kms_providers == {"local": {"key": KEY}}


@given(length=st.integers(0, 300).filter(lambda n: n != LOCAL_KEY_BYTES))
def test_a_key_of_another_length_is_refused_with_its_length(length: int) -> None:
    with pytest.raises(EncryptionConfigError, match=f"holds {length} bytes.*exactly 96"):
        Encryption.local(os.urandom(length))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (base64.b64encode(KEY[:32]), "holds 32 bytes; the local KMS provider needs exactly 96"),
        (b"not base64 at all!" * 3, "is not base64 text of a 96-byte key"),
        (b"", "holds 0 bytes"),
        (KEY + b"\n", "is not base64 text"),
    ],
    ids=["short", "not-base64", "empty", "raw-with-newline"],
)
def test_a_bad_key_file_is_refused_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(EncryptionConfigError, match=message) as caught:
        Encryption.local_from_file(path)
    assert str(path) in str(caught.value)


def test_a_missing_key_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(EncryptionConfigError, match="cannot read the local master key file"):
        Encryption.local_from_file(path)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "is not set or empty"),
        ("", "is not set or empty"),
        (base64.b64encode(KEY[:95]).decode(), "holds 95 bytes"),
        ("%%%", "is not base64 text"),
        ("ключ", "is not base64 text"),
    ],
    ids=["unset", "empty", "short", "not-base64", "not-ascii"],
)
def test_a_bad_key_variable_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None, message: str
) -> None:
    variable = "TEST_CHATKIT_MONGO_KEY"
    if value is None:
        monkeypatch.delenv(variable, raising=False)
    else:
        monkeypatch.setenv(variable, value)
    with pytest.raises(EncryptionConfigError, match=message) as caught:
        Encryption.local_from_env(variable)
    assert variable in str(caught.value)


def test_the_master_key_never_shows_in_repr() -> None:
    settings = Encryption.local(KEY)
    text = repr(settings) + str(settings)
    assert repr(KEY) not in text
    assert "kms_providers" not in text
    assert "local" in text  # the provider's name is not a secret


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key_vault_namespace": "novault"}, "key_vault_namespace must be 'database.collection'"),
        ({"key_vault_namespace": ".keys"}, "key_vault_namespace must be"),
        ({"key_vault_namespace": "db.$keys"}, "key_vault_namespace must be"),
        ({"key_cache_seconds": 0}, "key_cache_seconds must be positive and finite"),
        ({"key_cache_seconds": -1.0}, "key_cache_seconds must be positive"),
        ({"key_cache_seconds": math.inf}, "key_cache_seconds must be positive and finite"),
        ({"key_cache_seconds": math.nan}, "key_cache_seconds must be positive and finite"),
        ({"key_cache_seconds": True}, "key_cache_seconds must be a number"),
        ({"key_cache_seconds": "60"}, "key_cache_seconds must be a number"),
    ],
)
def test_unusable_settings_are_refused_naming_the_setting(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(EncryptionConfigError, match=message):
        Encryption.local(KEY, **options)


def test_cloud_providers_pass_through_unchanged() -> None:
    """Not testable without a cloud account: what is checked is that the settings reach
    libmongocrypt as given (the engine passes ``kms_providers`` and ``master_key`` on)."""
    aws = {"accessKeyId": "AKIA...", "secretAccessKey": "secret"}
    master_key = {"region": "eu-west-1", "key": "arn:aws:kms:eu-west-1:1:key/x"}
    settings = Encryption({"aws": aws}, kms_provider="aws", master_key=master_key)
    assert settings.kms_providers == {"aws": aws}
    assert settings.master_key == master_key
    assert "secret" not in repr(settings)


def test_no_providers_is_refused() -> None:
    with pytest.raises(EncryptionConfigError, match="kms_provider 'aws' is not among"):
        Encryption({"local": {"key": KEY}}, kms_provider="aws")
    with pytest.raises(EncryptionConfigError, match="at least one KMS provider"):
        Encryption({})
    with pytest.raises(EncryptionConfigError, match=r"kms_providers\['local'\]\['key'\] holds 3"):
        Encryption({"local": {"key": b"abc"}})
