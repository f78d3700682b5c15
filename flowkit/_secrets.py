"""Encryption for ``SecretStr`` / ``SecretBytes`` state fields.

Secrets are never stored in clear: the codec (:mod:`flowkit._codec`) hands their
plaintext to a :class:`SecretCipher`, which seals it with Fernet (AES-128-CBC plus
HMAC-SHA256, from the ``cryptography`` package, installed with
``pip install 'flowkit[secrets]'``).

The key is either

* a Fernet key — 32 random bytes, urlsafe-base64 encoded (44 characters), as made by
  :func:`generate_key`; used as is, or
* any other passphrase (``str`` or ``bytes``); a Fernet key is derived from it with
  PBKDF2-HMAC-SHA256, 600,000 iterations and the fixed salt ``b"flowkit.secrets.v1"``.
  The salt is fixed so that the same passphrase opens the same runs on every machine;
  the iteration count makes guessing a weak passphrase slow. Derivation costs a few
  tenths of a second once per passphrase and process (the result is cached). A
  generated key costs nothing and is stronger: prefer it.

A passphrase that happens to be a valid Fernet key is used as a Fernet key.

:func:`resolve_cipher` picks the key: an explicit one, else the ``FLOWKIT_SECRET_KEY``
environment variable, else none (storing a secret then fails with a
:class:`~flowkit.exceptions.SecretKeyError` naming the field). A flow picks its key the
same way, after its own sources (``Flow._cipher``), and only comes here when it has one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import secrets
from typing import TYPE_CHECKING

from flowkit.exceptions import FlowConfigurationError, SecretKeyError

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

__all__ = ["ENV_VAR", "SecretCipher", "generate_key", "resolve_cipher"]

ENV_VAR = "FLOWKIT_SECRET_KEY"

_SALT = b"flowkit.secrets.v1"
_ITERATIONS = 600_000
_FERNET_KEY_SHAPE = re.compile(rb"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]=")


def generate_key() -> str:
    """Return a new random Fernet key (urlsafe base64, 44 characters).

    Example::

        export FLOWKIT_SECRET_KEY="$(python -c 'import flowkit; print(flowkit.generate_key())')"

    or in code: ``MyFlow(secret_key=key)`` / ``@persist(store, secret_key=key)``.
    """
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


class SecretCipher:
    """Encrypts and decrypts secret values with one key.

    Example::

        cipher = SecretCipher("correct horse battery staple")
        token = cipher.encrypt(b"sk-live-123")
        assert cipher.decrypt(token) == b"sk-live-123"
    """

    __slots__ = ("_fernet",)

    def __init__(self, key: str | bytes) -> None:
        fernet_cls = _fernet_class()
        self._fernet: Fernet = fernet_cls(_fernet_key(key))

    def __repr__(self) -> str:
        return "SecretCipher(<key hidden>)"

    def encrypt(self, plaintext: bytes) -> str:
        """Return an opaque ASCII token holding ``plaintext``."""
        return self._fernet.encrypt(plaintext).decode("ascii")

    def decrypt(self, token: str) -> bytes:
        """Return the plaintext sealed in ``token``.

        Raises:
            SecretKeyError: the token was sealed with another key, or is damaged.
        """
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise SecretKeyError(
                "A stored secret cannot be decrypted: it was encrypted with a different key "
                "(or the stored value is damaged). Set FLOWKIT_SECRET_KEY (or pass the key "
                "explicitly) to the key the run was saved with."
            ) from None


def resolve_cipher(key: str | bytes | None = None) -> SecretCipher | None:
    """Return a cipher for ``key``, else for ``$FLOWKIT_SECRET_KEY``, else ``None``.

    An empty environment variable counts as unset.

    Raises:
        FlowConfigurationError: ``key`` is empty.
        SecretKeyError: a key is given but ``cryptography`` is not installed.
    """
    if key is None:
        key = os.environ.get(ENV_VAR) or None
        if key is None:
            return None
    return SecretCipher(key)


def _fernet_class() -> type[Fernet]:
    try:
        from cryptography.fernet import Fernet
    except ImportError:
        raise SecretKeyError(
            "Encrypting secret state fields needs the 'cryptography' package, which is not "
            "installed. Install it with: pip install 'flowkit[secrets]'"
        ) from None
    return Fernet


def _fernet_key(key: str | bytes) -> bytes:
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, bytes):
        raise FlowConfigurationError(
            f"A secret key must be str or bytes, not {type(key).__name__}. "
            "Pass a key made by flowkit.generate_key() or a passphrase."
        )
    if not key:
        raise FlowConfigurationError(
            "The secret key is empty. Pass a key made by flowkit.generate_key() "
            "or a non-empty passphrase."
        )
    if _is_fernet_key(key):
        return key
    return _derive(key)


def _is_fernet_key(key: bytes) -> bool:
    # 32 bytes in urlsafe base64 is exactly 43 alphabet characters and one "=".
    return _FERNET_KEY_SHAPE.fullmatch(key) is not None


@functools.lru_cache(maxsize=8)
def _derive(passphrase: bytes) -> bytes:
    raw = hashlib.pbkdf2_hmac("sha256", passphrase, _SALT, _ITERATIONS, dklen=32)
    return base64.urlsafe_b64encode(raw)
