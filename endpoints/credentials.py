"""Endpoint credentials: keys encrypted at rest, their HMAC digests for the gateway, signed tokens.

- Keys are encrypted with a Fernet key derived from SECRET_KEY, so a database dump alone reveals none.
- The gateway gets `HMAC-SHA256(gateway secret, key)` per key and compares digests in constant time.
- Tokens for `aml_token` endpoints are Ed25519-signed JWTs; the gateway verifies them with the public key
  from the route table, so no call back to the control plane is needed per request.
- A token is bound to its endpoint's identity (the row's primary key, never reused) and key generation
  (bumped by every key regeneration and auth-mode switch), both in the route table: a token outlives
  neither the endpoint it was issued for (deleted and created again under the same name) nor a
  regeneration or switch.
"""

import base64
import hashlib
import hmac
import os
import secrets
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import jwt
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from studio.env import env_secret

if TYPE_CHECKING:
    from endpoints.models import OnlineEndpoint

TOKEN_ISSUER = "studio"  # noqa: S105 (the JWT issuer claim, not a secret)
TOKEN_LIFETIME = timedelta(hours=1)
TOKEN_REFRESH_AFTER = timedelta(minutes=45)


def _home_secret(filename: str, make) -> bytes:
    """A secret kept under STUDIO_HOME, made once on first use (0600, never overwritten)."""
    path = Path(settings.STUDIO_HOME) / filename
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(make())
    return path.read_bytes().strip()


def gateway_secret() -> str:
    """The secret the gateway presents for the route table and keys the digests with."""
    return (
        env_secret("STUDIO_GATEWAY_SECRET")
        or _home_secret("gateway_secret", lambda: secrets.token_urlsafe(48).encode()).decode()
    )


@cache
def _fernet(secret_key: str) -> Fernet:
    derived = hashlib.sha256(b"studio endpoint keys\0" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


def new_key() -> str:
    return secrets.token_urlsafe(32)


def encrypt(value: str) -> str:
    return _fernet(settings.SECRET_KEY).encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    return _fernet(settings.SECRET_KEY).decrypt(value.encode()).decode()


def key_digest(key: str, secret: str | None = None) -> str:
    return hmac.new((secret or gateway_secret()).encode(), key.encode(), hashlib.sha256).hexdigest()


def _signing_key() -> Ed25519PrivateKey:
    pem = env_secret("STUDIO_TOKEN_SIGNING_KEY")
    raw = (
        pem.encode()
        if pem
        else _home_secret(
            "token_signing_key.pem",
            lambda: Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        )
    )
    return serialization.load_pem_private_key(raw, password=None)


def token_public_key() -> str:
    public = _signing_key().public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def token_binding(endpoint: "OnlineEndpoint") -> dict:
    """What binds a token to `endpoint` as it is now: the claims a token carries, and the route table
    publishes for the gateway to compare (serving/gateway/auth.py)."""
    return {"endpoint_id": str(endpoint.pk), "key_generation": endpoint.key_generation}


def issue_token(
    endpoint: "OnlineEndpoint", now: datetime | None = None, *, audience: str | None = None
) -> dict:
    """A token for one endpoint, in the shape Azure's get-credentials answers with. `audience` is the
    endpoint's name for an online endpoint; a batch endpoint's tokens carry another (batch_audience), so
    neither kind is accepted for the other, even under the same name."""
    now = now or datetime.now(UTC)
    expiry = now + TOKEN_LIFETIME
    claims = {
        "iss": TOKEN_ISSUER,
        "aud": audience or endpoint.name,
        "iat": now,
        "exp": expiry,
        "jti": secrets.token_hex(8),
    }
    token = jwt.encode({**claims, **token_binding(endpoint)}, _signing_key(), algorithm="EdDSA")
    return {
        "accessToken": token,
        "tokenType": "Bearer",
        "expiryTimeUtc": int(expiry.timestamp()),
        "refreshAfterTimeUtc": int((now + TOKEN_REFRESH_AFTER).timestamp()),
    }


def batch_audience(name: str) -> str:
    """The audience of a batch endpoint's tokens: never an online endpoint's name, which has no '/'."""
    return f"batch-endpoints/{name}"


def token_accepted(token: str, endpoint, audience: str) -> bool:
    """Whether `token` was issued by this installation for `audience`, for `endpoint` as it is now (its
    identity and key generation), and has not expired. The gateway checks online tokens the same way
    (serving/gateway/auth.py) from the route table; this is for tokens the control plane checks itself."""
    try:
        claims = jwt.decode(
            token,
            token_public_key(),
            algorithms=["EdDSA"],
            audience=audience,
            issuer=TOKEN_ISSUER,
            options={"require": ["exp", "iat", "aud", "iss", "endpoint_id", "key_generation"]},
        )
    except jwt.PyJWTError:
        return False
    binding = token_binding(endpoint)
    return all(claims[claim] == value for claim, value in binding.items())
