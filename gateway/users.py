"""The users file: one person per line with a SCRAM-SHA-256 verifier, never a password.

Format (the verifier is PostgreSQL's own ``pg_authid.rolpassword`` form)::

    # comments and blank lines are ignored
    maint:SCRAM-SHA-256$4096:<salt b64>$<StoredKey b64>:<ServerKey b64>

``sekisho passwd USER`` writes or replaces a line. Shared accounts are a policy matter; this file
only knows that each name is one person who proves a password.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scramp import ScramMechanism

ITERATIONS = 4096
# Salt length of the verifiers ``sekisho passwd`` writes (scramp's default so far); the mock verifier
# for unknown users uses the same length, or its salt would tell a missing user from a real one.
SALT_BYTES = 32
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,63}$")
_VERIFIER = re.compile(
    r"^SCRAM-SHA-256\$(?P<iter>\d+):(?P<salt>[A-Za-z0-9+/=]+)"
    r"\$(?P<stored>[A-Za-z0-9+/=]+):(?P<server>[A-Za-z0-9+/=]+)$"
)


class UsersFileError(Exception):
    """The users file cannot be read or a line of it is not a valid entry."""

    code = "users_file_invalid"


@dataclass(frozen=True, slots=True)
class Verifier:
    """What the server keeps of a SCRAM-SHA-256 password (RFC 5802 / 7677)."""

    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def encode(self) -> str:
        b64 = base64.b64encode
        return (
            f"SCRAM-SHA-256${self.iterations}:{b64(self.salt).decode()}"
            f"${b64(self.stored_key).decode()}:{b64(self.server_key).decode()}"
        )

    @classmethod
    def parse(cls, text: str) -> Verifier:
        match = _VERIFIER.match(text.strip())
        if not match:
            raise ValueError("not a SCRAM-SHA-256 verifier (SCRAM-SHA-256$iter:salt$stored:server)")
        try:
            return cls(
                int(match["iter"]),
                base64.b64decode(match["salt"], validate=True),
                base64.b64decode(match["stored"], validate=True),
                base64.b64decode(match["server"], validate=True),
            )
        except binascii.Error as exc:
            raise ValueError(f"bad base64 in verifier: {exc}") from exc

    @classmethod
    def make(cls, password: str, iterations: int = ITERATIONS) -> Verifier:
        salt, stored, server, count = ScramMechanism("SCRAM-SHA-256").make_auth_info(
            password, iteration_count=iterations, salt=secrets.token_bytes(SALT_BYTES)
        )
        return cls(int(count), bytes(salt), bytes(stored), bytes(server))


def typical_salt_bytes(users: dict[str, Verifier]) -> int:
    """The most common salt length among real verifiers (verifiers copied from PostgreSQL have 16),
    so that the mock verifier of an unknown user has the same length as most known ones."""
    lengths = Counter(len(v.salt) for v in users.values())
    return lengths.most_common(1)[0][0] if lengths else SALT_BYTES


def load_or_create_secret(path: Path, what: str = "mock-verifier secret") -> bytes:
    """A random 32-byte secret kept in a 0600 file, stable across restarts; ``what`` names it in errors.

    For mock verifiers (a salt that changed on every restart for unknown users only would tell them
    apart from real ones) and the token key (tokens that changed would no longer join). The file
    appears whole or not at all (written aside, then linked into place), so processes that start
    together agree on one secret instead of each keeping the one it wrote.
    """
    secret = _read_secret(path, what)
    if secret is not None:
        return secret
    secret = secrets.token_bytes(32)
    try:
        fd, aside = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(secret)
            try:
                os.link(aside, path)  # refuses to replace a file another process created meanwhile
            except FileExistsError:
                theirs = _read_secret(path, what)
                if theirs is not None:
                    return theirs
                os.replace(aside, path)  # a truncated file: nobody can be using it
            except OSError:  # a file system without hard links: no agreement, but a secret
                os.replace(aside, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot write the {what}: {exc.strerror}") from exc
    return secret


def _read_secret(path: Path, what: str) -> bytes | None:
    """The secret in ``path``, or None when there is none yet (missing, or shorter than 32 bytes)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read the {what}: {exc.strerror}") from exc
    return data[:32] if len(data) >= 32 else None


def valid_name(name: str) -> bool:
    # fullmatch: with match, '$' also matches before a trailing newline ("bob\n" would pass).
    return bool(_NAME.fullmatch(name))


def load_users(path: Path) -> dict[str, Verifier]:
    """Read the users file; any bad line is an error naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read users file: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsersFileError(f"{path}: users file is not valid UTF-8: {exc}") from exc
    users: dict[str, Verifier] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, verifier = stripped.partition(":")
        if not sep or not valid_name(name):
            raise UsersFileError(
                f"{path}:{lineno}: expected 'name:SCRAM-SHA-256$...' with a name of letters, "
                "digits and _.@- (at most 63)"
            )
        if name in users:
            raise UsersFileError(f"{path}:{lineno}: user {name!r} is listed twice")
        try:
            users[name] = Verifier.parse(verifier)
        except ValueError as exc:
            raise UsersFileError(f"{path}:{lineno}: user {name!r}: {exc}") from exc
    return users


def set_password(path: Path, name: str, password: str) -> None:
    """Add or replace one user's verifier, atomically, keeping every other line as it was."""
    if not valid_name(name):
        raise UsersFileError(f"invalid user name {name!r}: letters, digits and _.@- (at most 63)")
    if not password:
        raise UsersFileError("empty passwords are not allowed")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    entry = f"{name}:{Verifier.make(password).encode()}"
    replaced = False
    for i, line in enumerate(lines):
        if line.strip().partition(":")[0] == name and not line.strip().startswith("#"):
            lines[i] = entry
            replaced = True
    if not replaced:
        lines.append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
