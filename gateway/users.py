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
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scramp import ScramMechanism

ITERATIONS = 4096
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
            password, iteration_count=iterations
        )
        return cls(int(count), bytes(salt), bytes(stored), bytes(server))


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def load_users(path: Path) -> dict[str, Verifier]:
    """Read the users file; any bad line is an error naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsersFileError(f"{path}: cannot read users file: {exc.strerror}") from exc
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
