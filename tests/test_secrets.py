"""flowkit._secrets: the cipher that keeps SecretStr / SecretBytes fields out of storage."""

from __future__ import annotations

import base64
import sys

import pytest

from flowkit._secrets import ENV_VAR, SecretCipher, generate_key, resolve_cipher
from flowkit.exceptions import FlowConfigurationError, FlowkitError, SecretKeyError

PLAINTEXT = b"sk-live-0123456789abcdef"


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(generate_key(), id="fernet-key-str"),
        pytest.param(generate_key().encode(), id="fernet-key-bytes"),
        pytest.param("correct horse battery staple", id="passphrase-str"),
        pytest.param(b"\x00\xffbinary passphrase", id="passphrase-bytes"),
    ],
)
def test_round_trip(key: str | bytes) -> None:
    """What encrypt seals, decrypt with the same key opens."""
    cipher = SecretCipher(key)
    assert cipher.decrypt(cipher.encrypt(PLAINTEXT)) == PLAINTEXT


def test_same_passphrase_opens_tokens_from_another_cipher() -> None:
    """A passphrase derives the same key every time (fixed salt), so another process can read."""
    token = SecretCipher("shared passphrase").encrypt(PLAINTEXT)
    assert SecretCipher("shared passphrase").decrypt(token) == PLAINTEXT


def test_fernet_key_is_used_as_is() -> None:
    """A generated key is a plain Fernet key: cryptography's Fernet reads our tokens."""
    from cryptography.fernet import Fernet

    key = generate_key()
    assert Fernet(key).decrypt(SecretCipher(key).encrypt(PLAINTEXT).encode()) == PLAINTEXT


@pytest.mark.parametrize(
    ("right", "wrong"),
    [
        pytest.param(generate_key(), generate_key(), id="fernet-keys"),
        pytest.param("passphrase one", "passphrase two", id="passphrases"),
    ],
)
def test_wrong_key_is_a_secret_key_error(right: str, wrong: str) -> None:
    """Decrypting with another key raises SecretKeyError saying which key to set."""
    token = SecretCipher(right).encrypt(PLAINTEXT)
    with pytest.raises(SecretKeyError, match="different key") as info:
        SecretCipher(wrong).decrypt(token)
    assert ENV_VAR in str(info.value)


def test_damaged_token_is_a_secret_key_error() -> None:
    """A token that is not a Fernet token at all is reported the same way, not as a crash."""
    with pytest.raises(SecretKeyError):
        SecretCipher(generate_key()).decrypt("not a token ✗")


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    """The token reveals neither the plaintext nor its base64 form."""
    token = SecretCipher(generate_key()).encrypt(PLAINTEXT)
    assert PLAINTEXT.decode() not in token
    assert base64.b64encode(PLAINTEXT).decode()[:16] not in token
    assert PLAINTEXT not in base64.urlsafe_b64decode(token)


def test_encryption_is_randomised() -> None:
    """Equal plaintexts give different tokens, so equal secrets cannot be spotted in storage."""
    cipher = SecretCipher(generate_key())
    assert cipher.encrypt(PLAINTEXT) != cipher.encrypt(PLAINTEXT)


def test_generate_key_makes_distinct_fernet_keys() -> None:
    """generate_key returns 44-character urlsafe base64 of 32 random bytes."""
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(key) == 44
        assert len(base64.urlsafe_b64decode(key)) == 32


def test_repr_hides_the_key() -> None:
    """Logging a cipher does not leak its key."""
    key = generate_key()
    assert key not in repr(SecretCipher(key))


def test_resolve_cipher_without_key_or_env_is_none() -> None:
    """No explicit key and no FLOWKIT_SECRET_KEY: no cipher."""
    assert resolve_cipher(None) is None


def test_resolve_cipher_treats_empty_env_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLOWKIT_SECRET_KEY='' counts as unset."""
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve_cipher() is None


def test_resolve_cipher_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no explicit key, FLOWKIT_SECRET_KEY is used."""
    key = generate_key()
    monkeypatch.setenv(ENV_VAR, key)
    cipher = resolve_cipher()
    assert cipher is not None
    assert SecretCipher(key).decrypt(cipher.encrypt(PLAINTEXT)) == PLAINTEXT


def test_resolve_cipher_prefers_the_explicit_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit key wins over FLOWKIT_SECRET_KEY."""
    explicit = generate_key()
    monkeypatch.setenv(ENV_VAR, generate_key())
    cipher = resolve_cipher(explicit)
    assert cipher is not None
    assert SecretCipher(explicit).decrypt(cipher.encrypt(PLAINTEXT)) == PLAINTEXT


@pytest.mark.parametrize("key", [pytest.param("", id="str"), pytest.param(b"", id="bytes")])
def test_empty_explicit_key_is_a_configuration_error(key: str | bytes) -> None:
    """An explicit empty key is a mistake, not 'no key'."""
    with pytest.raises(FlowConfigurationError, match="empty"):
        SecretCipher(key)


def test_missing_cryptography_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the cryptography package the error is a FlowkitError naming the extra."""
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)
    with pytest.raises(FlowkitError, match=r"pip install 'flowkit\[secrets\]'"):
        SecretCipher(generate_key())


def test_no_key_needs_no_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve_cipher() without any key never imports cryptography."""
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)
    assert resolve_cipher() is None
