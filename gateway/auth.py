"""SCRAM-SHA-256 in both roles, as exchanges over bytes with no I/O.

Towards clients Sekisho is the SCRAM *server*: it offers only SCRAM-SHA-256, so cleartext and md5
can never be chosen by a client. A user that does not exist gets a full exchange against a
deterministic fake verifier (derived from a per-process secret and the name) so that the failure is
indistinguishable from a wrong password (PostgreSQL's own "mock authentication").

Towards the upstream Sekisho is a *client* with service credentials: trust, cleartext password, md5
and SCRAM-SHA-256, whichever the server asks for.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from scramp import ScramClient, ScramException

from gateway.users import ITERATIONS, SALT_BYTES, Verifier

MECHANISM = "SCRAM-SHA-256"


class AuthFailed(Exception):
    """The client did not prove the password (or broke the SASL exchange)."""

    code = "auth_failed"


class ScramServerExchange:
    """Server side of one SCRAM-SHA-256 exchange (RFC 5802/7677), without channel binding.

    Written here rather than taken from scramp because libpq sends an empty SCRAM user name
    (``n=,r=...``; PostgreSQL takes the user from the startup packet) and scramp's server rejects
    that message. The signature arithmetic is the RFC's, over the exact bytes the client sent.
    """

    def __init__(
        self, verifier: Verifier | None, username: str, mock_secret: bytes, mock_salt_bytes: int = SALT_BYTES
    ) -> None:
        self._verifier = verifier or _mock_verifier(username, mock_secret, mock_salt_bytes)
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def server_first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuthFailed("SCRAM client-first message is not UTF-8") from exc
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag not in ("n", "y") or authzid or not bare:
            # 'p=...' asks for channel binding, which was not offered.
            raise AuthFailed("invalid SCRAM client-first message (channel binding not offered)")
        attrs = _attributes(bare)
        client_nonce = attrs.get("r", "")
        if "n" not in attrs or not client_nonce or "m" in attrs:
            raise AuthFailed("invalid SCRAM client-first message")
        self._gs2_header = f"{flag},,"
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        salt = base64.b64encode(self._verifier.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={self._verifier.iterations}"
        return self._server_first.encode("ascii")

    def server_final(self, client_final: bytes) -> bytes:
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuthFailed("SCRAM client-final message is not UTF-8") from exc
        if not self._nonce:
            raise AuthFailed("SCRAM client-final message before client-first")
        without_proof, sep, proof_b64 = text.rpartition(",p=")
        attrs = _attributes(without_proof)
        expected_binding = base64.b64encode(self._gs2_header.encode("ascii")).decode("ascii")
        if not sep or attrs.get("c") != expected_binding or attrs.get("r") != self._nonce:
            raise AuthFailed("invalid SCRAM client-final message")
        try:
            proof = base64.b64decode(proof_b64, validate=True)
        except ValueError as exc:
            raise AuthFailed("invalid SCRAM proof encoding") from exc
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        stored_key = self._verifier.stored_key
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        if len(proof) != len(signature):
            raise AuthFailed("password authentication failed")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key):
            raise AuthFailed("password authentication failed")
        server_signature = hmac.new(self._verifier.server_key, auth_message, hashlib.sha256).digest()
        return b"v=" + base64.b64encode(server_signature)


def _attributes(text: str) -> dict[str, str]:
    """SCRAM's 'a=value,b=value' attribute list (values may contain '=')."""
    attrs: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise AuthFailed("malformed SCRAM attribute")
        attrs.setdefault(key, value)
    return attrs


def _mock_verifier(username: str, secret: bytes, salt_bytes: int) -> Verifier:
    """A stable verifier nobody knows the password of, so unknown users look like known ones."""
    digest = hmac.new(secret, username.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    other = hmac.new(secret, digest, hashlib.sha256).digest()
    salt = hmac.new(secret, other, hashlib.sha512).digest()[:salt_bytes]
    return Verifier(ITERATIONS, salt, other, digest)


class ScramClientExchange:
    """Client side of SCRAM-SHA-256 towards the upstream, with the service password."""

    def __init__(self, user: str, password: str) -> None:
        self._client = ScramClient([MECHANISM], user, password)

    def client_first(self) -> bytes:
        return str(self._client.get_client_first()).encode("utf-8")

    def client_final(self, server_first: bytes) -> bytes:
        self._client.set_server_first(server_first.decode("utf-8"))
        return str(self._client.get_client_final()).encode("utf-8")

    def verify_server_final(self, server_final: bytes) -> None:
        try:
            self._client.set_server_final(server_final.decode("utf-8"))
        except ScramException as exc:
            raise AuthFailed(f"upstream server signature did not verify: {exc}") from exc


def md5_password(user: str, password: str, salt: bytes) -> str:
    """PostgreSQL's md5 response: 'md5' + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode("utf-8"), usedforsecurity=False).hexdigest()
    outer = hashlib.md5(inner.encode("ascii") + salt, usedforsecurity=False).hexdigest()
    return "md5" + outer
