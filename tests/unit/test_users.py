"""The users file: verifiers written by set_password, read back by load_users, errors by file:line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path

import pytest

import gateway.users as users_module
from gateway.users import (
    ITERATIONS,
    UsersFileError,
    Verifier,
    load_or_create_secret,
    load_users,
    set_password,
    valid_name,
)


def _proves(verifier: Verifier, password: str) -> bool:
    """RFC 5802 key derivation, independent of the code under test: does this password match?"""
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), verifier.salt, verifier.iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest() == verifier.stored_key and server_key == verifier.server_key


def _verifier_line(name: str, password: str) -> str:
    return f"{name}:{Verifier.make(password).encode()}"


def test_set_password_then_load_users(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    set_password(path, "alice", "s3cret!")
    users = load_users(path)
    assert list(users) == ["alice"]
    verifier = users["alice"]
    assert verifier.iterations == ITERATIONS
    assert _proves(verifier, "s3cret!")
    assert not _proves(verifier, "s3cret")
    assert "s3cret!" not in path.read_text()


def test_verifier_text_form_round_trips() -> None:
    verifier = Verifier.make("pw")
    text = verifier.encode()
    assert text.startswith(f"SCRAM-SHA-256${ITERATIONS}:")
    assert Verifier.parse(text) == verifier
    assert Verifier.parse(f"  {text}\n") == verifier


def test_postgresql_verifier_is_accepted() -> None:
    # The rolpassword form PostgreSQL stores, built by hand for password "pencil".
    salt = b"0123456789abcdef"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    text = f"SCRAM-SHA-256$4096:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"
    assert Verifier.parse(text) == Verifier(4096, salt, stored, server)
    assert _proves(Verifier.parse(text), "pencil")


def test_replacing_a_user_keeps_every_other_line(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    alice = _verifier_line("alice", "a")
    old_bob = _verifier_line("bob", "old")
    lines = [
        "# people allowed through Sekisho",
        "",
        alice,
        "   # bob:SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy  (an old, commented-out entry)",
        old_bob,
        "carol:" + Verifier.make("c").encode(),
    ]
    path.write_text("\n".join(lines) + "\n")
    set_password(path, "bob", "new")
    after = path.read_text().splitlines()
    assert len(after) == len(lines)
    assert [a for i, a in enumerate(after) if i != 4] == [b for i, b in enumerate(lines) if i != 4]
    assert after[4].startswith("bob:SCRAM-SHA-256$")
    assert after[4] != old_bob
    users = load_users(path)
    assert list(users) == ["alice", "bob", "carol"]
    assert _proves(users["bob"], "new")
    assert not _proves(users["bob"], "old")
    assert _proves(users["alice"], "a")


def test_adding_a_user_appends(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    set_password(path, "alice", "a")
    first = path.read_text()
    set_password(path, "bob", "b")
    assert path.read_text().startswith(first)
    assert set(load_users(path)) == {"alice", "bob"}


def test_users_file_mode_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    set_password(path, "alice", "a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    set_password(path, "alice", "b")  # rewriting an existing, too-open file tightens it
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["users.txt"]  # no temporary file left behind


def test_set_password_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "sekisho" / "users.txt"
    set_password(path, "alice", "a")
    assert list(load_users(path)) == ["alice"]


def _load(tmp_path: Path, text: str) -> dict[str, Verifier]:
    path = tmp_path / "users.txt"
    path.write_text(text)
    return load_users(path)


def test_comments_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    text = f"# header\n\n   \n  {_verifier_line('alice', 'a')}  \n# trailing comment\n"
    assert list(_load(tmp_path, text)) == ["alice"]
    assert _load(tmp_path, "") == {}


GOOD = Verifier.make("x").encode()


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("alice", "expected 'name:SCRAM-SHA-256"),
        (f"bad name:{GOOD}", "expected 'name:SCRAM-SHA-256"),
        (f"{'a' * 64}:{GOOD}", "expected 'name:SCRAM-SHA-256"),
        (f":{GOOD}", "expected 'name:SCRAM-SHA-256"),
        ("alice:md5abcdef0123456789", "user 'alice': not a SCRAM-SHA-256 verifier"),
        ("alice:SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk", "user 'alice': not a SCRAM-SHA-256 verifier"),
        ("alice:SCRAM-SHA-256$4096:c2FsdA=$c3RvcmVk:c2VydmVy", "user 'alice': bad base64"),
        ("alice:SCRAM-SHA-256$4096:c2=Fsd$c3RvcmVk:c2VydmVy", "user 'alice': bad base64"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"# users\n{_verifier_line('bob', 'b')}\n{line}\n")
    with pytest.raises(UsersFileError) as caught:
        load_users(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:3: ")
    assert why in message


def test_duplicate_user(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_text(f"{_verifier_line('bob', 'b')}\n\n{_verifier_line('bob', 'c')}\n")
    with pytest.raises(UsersFileError, match=r":3: user 'bob' is listed twice$"):
        load_users(path)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.txt"
    with pytest.raises(UsersFileError) as caught:
        load_users(path)
    assert str(caught.value).startswith(f"{path}: cannot read users file")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    path.write_bytes(b"# caf\xe9\n" + _verifier_line("bob", "b").encode() + b"\n")
    with pytest.raises(UsersFileError) as caught:
        load_users(path)
    assert str(caught.value).startswith(f"{path}: users file is not valid UTF-8")


@pytest.mark.parametrize(
    "name",
    ["", "a b", "a:b", "a" * 64, "bob\n", "\nbob", "bob\r", "bob\tx", "ålice", "a/b", "a\x00"],
    ids=repr,
)
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "users.txt"
    assert not valid_name(name)
    with pytest.raises(UsersFileError, match="invalid user name"):
        set_password(path, name, "pw")
    assert not path.exists()


@pytest.mark.parametrize("name", ["a", "a" * 63, "first.last@example.com", "svc_reporting-2", "X"])
def test_valid_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / "users.txt"
    assert valid_name(name)
    set_password(path, name, "pw")
    assert list(load_users(path)) == [name]


def test_empty_password_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "users.txt"
    with pytest.raises(UsersFileError, match="empty passwords"):
        set_password(path, "alice", "")
    assert not path.exists()


# --------------------------------------------------------------------------- secrets kept in files


def test_secret_is_created_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / ".sekisho-mock-secret"
    secret = load_or_create_secret(path)
    assert len(secret) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == secret
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing left aside


def test_secret_written_meanwhile_by_another_process_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two gateways starting together: the one that links its file first decides for both.
    path = tmp_path / ".sekisho-token-key"
    theirs = b"T" * 32

    def racing_token_bytes(n: int) -> bytes:
        path.write_bytes(theirs)  # the other process finishes between our read and our link
        return b"O" * n

    monkeypatch.setattr(users_module.secrets, "token_bytes", racing_token_bytes)
    assert load_or_create_secret(path, "token key") == theirs
    assert path.read_bytes() == theirs
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_truncated_secret_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / ".sekisho-token-key"
    path.write_bytes(b"short")
    secret = load_or_create_secret(path, "token key")
    assert len(secret) == 32
    assert path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_errors_name_the_secret(tmp_path: Path) -> None:
    with pytest.raises(UsersFileError, match="cannot write the mock-verifier secret"):
        load_or_create_secret(tmp_path / "missing-dir" / ".sekisho-mock-secret")
    with pytest.raises(UsersFileError, match="cannot read the token key"):
        load_or_create_secret(tmp_path, "token key")  # a directory, not a file
