"""SCRAM-SHA-256 server exchange against an independent client, and the md5 response."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scramp import ScramClient

from gateway.auth import AuthFailed, ScramServerExchange, md5_password
from gateway.users import ITERATIONS, Verifier

PASSWORD = "correct horse battery staple"
VERIFIER = Verifier.make(PASSWORD)
MOCK_SECRET = b"per-process mock secret for tests"
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


@dataclass
class RfcClient:
    """The client side of RFC 5802 / 7677, written out from the RFC (ASCII passwords only, so
    SASLprep is the identity). ``gs2`` is the GS2 header; libpq sends ``n,,`` and an empty name."""

    password: str
    username: str = ""
    gs2: str = "n,,"
    nonce: str = CLIENT_NONCE

    def first(self) -> bytes:
        return f"{self.gs2}{self.bare}".encode()

    @property
    def bare(self) -> str:
        return f"n={self.username},r={self.nonce}"

    def final(
        self, server_first: bytes, nonce: str | None = None, binding: bytes | None = None
    ) -> tuple[bytes, bytes]:
        """The client-final message and the server signature the client expects back.

        ``nonce`` and ``binding`` replace what an honest client sends, with a proof that is still
        correctly computed over the altered message."""
        attrs = {key: value for key, _, value in (p.partition("=") for p in server_first.decode().split(","))}
        assert attrs["r"].startswith(self.nonce)
        assert len(attrs["r"]) > len(self.nonce)
        salted = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
        )
        client_key = _hmac(salted, b"Client Key")
        cbind = _b64(self.gs2.encode() if binding is None else binding)
        without_proof = f"c={cbind},r={attrs['r'] if nonce is None else nonce}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(proof)}".encode(), server_signature


def _exchange(verifier: Verifier | None = VERIFIER, user: str = "alice") -> ScramServerExchange:
    return ScramServerExchange(verifier, user, MOCK_SECRET)


def _run(exchange: ScramServerExchange, client: RfcClient) -> bytes:
    final, expected_signature = client.final(exchange.server_first(client.first()))
    server_final = exchange.server_final(final)
    assert server_final == b"v=" + base64.b64encode(expected_signature)
    return server_final


def test_libpq_form_with_empty_user_name() -> None:
    client = RfcClient(PASSWORD)
    assert client.first() == f"n,,n=,r={CLIENT_NONCE}".encode()
    _run(_exchange(), client)


def test_user_name_in_the_scram_message_is_ignored() -> None:
    # PostgreSQL takes the user from the startup packet; the SCRAM name may be anything.
    _run(_exchange(), RfcClient(PASSWORD, username="somebody-else"))


def test_client_without_channel_binding_support_flag_y() -> None:
    _run(_exchange(), RfcClient(PASSWORD, gs2="y,,"))


def test_server_first_carries_the_verifier_salt_and_iterations() -> None:
    server_first = _exchange().server_first(RfcClient(PASSWORD).first()).decode()
    nonce, salt, iterations = server_first.split(",")
    assert nonce.startswith(f"r={CLIENT_NONCE}")
    assert salt == f"s={_b64(VERIFIER.salt)}"
    assert iterations == f"i={VERIFIER.iterations}"


def test_server_nonce_is_fresh_per_exchange() -> None:
    first = RfcClient(PASSWORD).first()
    nonces = {_exchange().server_first(first).split(b",")[0] for _ in range(5)}
    assert len(nonces) == 5


def test_scramp_client_with_a_user_name() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "alice", PASSWORD)
    exchange = _exchange()
    client.set_server_first(exchange.server_first(client.get_client_first().encode()).decode())
    server_final = exchange.server_final(client.get_client_final().encode())
    client.set_server_final(server_final.decode())  # raises if the server signature is wrong


def test_scramp_client_with_the_wrong_password() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "alice", "not the password")
    exchange = _exchange()
    client.set_server_first(exchange.server_first(client.get_client_first().encode()).decode())
    with pytest.raises(AuthFailed, match=r"^password authentication failed$"):
        exchange.server_final(client.get_client_final().encode())


def test_wrong_password_fails() -> None:
    exchange = _exchange()
    client = RfcClient("wrong password")
    final, _ = client.final(exchange.server_first(client.first()))
    with pytest.raises(AuthFailed, match=r"^password authentication failed$"):
        exchange.server_final(final)


@settings(max_examples=25, deadline=None)
@given(password=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=24))
def test_any_ascii_password_round_trips(password: str) -> None:
    verifier = Verifier.make(password)
    _run(_exchange(verifier), RfcClient(password))
    exchange = _exchange(verifier)
    final, _ = RfcClient(password + "x").final(exchange.server_first(RfcClient(password).first()))
    with pytest.raises(AuthFailed):
        exchange.server_final(final)


def _failure(exchange: ScramServerExchange, password: str) -> AuthFailed:
    final, _ = RfcClient(password).final(exchange.server_first(RfcClient(password).first()))
    with pytest.raises(AuthFailed) as caught:
        exchange.server_final(final)
    return caught.value


def test_unknown_user_fails_exactly_like_a_wrong_password() -> None:
    wrong = _failure(_exchange(VERIFIER, "alice"), "guess")
    unknown = _failure(_exchange(None, "mallory"), "guess")
    assert type(unknown) is type(wrong) is AuthFailed
    assert str(unknown) == str(wrong) == "password authentication failed"
    # Even the right password of some real user does not open a user that does not exist.
    _failure(_exchange(None, "mallory"), PASSWORD)


def _salt_and_iterations(exchange: ScramServerExchange) -> tuple[bytes, bytes]:
    _, salt, iterations = exchange.server_first(RfcClient("x").first()).split(b",")
    return salt, iterations


def test_unknown_user_gets_a_stable_plausible_salt() -> None:
    salt, iterations = _salt_and_iterations(_exchange(None, "mallory"))
    # A real user's salt is the same on every attempt, so the fake one must be too.
    assert _salt_and_iterations(_exchange(None, "mallory")) == (salt, iterations)
    assert _salt_and_iterations(_exchange(None, "eve"))[0] != salt
    assert _salt_and_iterations(ScramServerExchange(None, "mallory", b"other secret"))[0] != salt
    assert len(base64.b64decode(salt.removeprefix(b"s="))) == len(VERIFIER.salt)
    assert iterations == f"i={ITERATIONS}".encode()


def test_replayed_client_final_fails_against_a_new_exchange() -> None:
    client = RfcClient(PASSWORD)
    first_exchange = _exchange()
    final, _ = client.final(first_exchange.server_first(client.first()))
    first_exchange.server_final(final)
    replay = _exchange()
    replay.server_first(client.first())
    with pytest.raises(AuthFailed, match="invalid SCRAM client-final message"):
        replay.server_final(final)


@pytest.mark.parametrize(
    ("nonce", "binding"),
    [
        (CLIENT_NONCE, None),  # only the client's half of the nonce
        (CLIENT_NONCE + "c29tZSBvdGhlciBzZXJ2ZXI=", None),  # a nonce from another exchange
        (None, b"y,,"),  # binding data that is not the GS2 header the client sent
        (None, b"p=tls-server-end-point,,\x01\x02"),  # channel binding data, never offered
        (None, b""),
    ],
)
def test_correctly_signed_final_with_altered_nonce_or_binding(
    nonce: str | None, binding: bytes | None
) -> None:
    # The proof covers whatever the client put in the message, so only the explicit checks of the
    # nonce and the channel binding stop these.
    exchange = _exchange()
    client = RfcClient(PASSWORD)
    final, _ = client.final(exchange.server_first(client.first()), nonce=nonce, binding=binding)
    with pytest.raises(AuthFailed, match=r"^invalid SCRAM client-final message$"):
        exchange.server_final(final)


# --------------------------------------------------------------------------- malformed messages


@pytest.mark.parametrize(
    "client_first",
    [
        b"\xff\xfen,,n=,r=abc",  # not UTF-8
        b"p=tls-server-end-point,,n=,r=abc",  # asks for channel binding, never offered
        b"x,,n=,r=abc",  # not a GS2 flag
        b"n,a=admin,n=,r=abc",  # authorization identity
        b"n,,n=,r=",  # empty nonce
        b"n,,r=abc",  # no user name attribute
        b"n,,n=",  # no nonce
        b"n,,m=ext,n=,r=abc",  # mandatory extension
        b"n,,n=,r=abc,junk",  # not an attribute
        b"n,,n=,r=abc,xy=1",  # attribute names are one letter
        b"n,,",
        b"n",
        b"",
    ],
)
def test_malformed_client_first(client_first: bytes) -> None:
    with pytest.raises(AuthFailed):
        _exchange().server_first(client_first)


def _final_without_proof(server_first: bytes, gs2: str = "n,,") -> str:
    nonce = server_first.split(b",")[0].decode()
    return f"c={_b64(gs2.encode())},{nonce}"


def _bad_finals(server_first: bytes) -> list[bytes]:
    good, _ = RfcClient(PASSWORD).final(server_first)
    without_proof, _, proof = good.decode().rpartition(",p=")
    nonce = server_first.split(b",")[0].decode()
    cbind = _b64(b"n,,")
    return [
        b"\xff" + good,  # not UTF-8
        without_proof.encode(),  # no proof
        f"c={cbind},{nonce}x,p={proof}".encode(),  # nonce changed
        f"c={cbind},r={CLIENT_NONCE},p={proof}".encode(),  # only the client's half of the nonce
        f"c={_b64(b'y,,')},{nonce},p={proof}".encode(),  # binding data differs from the header sent
        f"c={_b64(b'p=tls-server-end-point,,')}AAAA,{nonce},p={proof}".encode(),  # channel binding
        f"{nonce},p={proof}".encode(),  # no channel binding attribute
        f"c={cbind},p={proof}".encode(),  # no nonce
        f"c={cbind},{nonce},p=!!not base64!!".encode(),
        f"c={cbind},{nonce},p={proof[:-4]}".encode(),  # truncated base64
        f"c={cbind},{nonce},p={_b64(b'short')}".encode(),  # wrong proof length
        f"c={cbind},{nonce},p=é{proof}".encode(),  # non-ASCII proof
        f"c={cbind},{nonce},junk,p={proof}".encode(),  # not an attribute
        b"",
        b",p=",
    ]


@pytest.mark.parametrize("index", range(15))
def test_malformed_client_final(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fixed server nonce lets a control exchange show that the unmodified message is accepted,
    # so each failure below is due to its malformation alone.
    monkeypatch.setattr("gateway.auth.secrets.token_bytes", lambda n: b"\x5a" * n)
    client = RfcClient(PASSWORD)
    control = _exchange()
    server_first = control.server_first(client.first())
    good, _ = client.final(server_first)
    assert control.server_final(good).startswith(b"v=")
    exchange = _exchange()
    assert exchange.server_first(client.first()) == server_first
    bad = _bad_finals(server_first)
    assert len(bad) == 15
    with pytest.raises(AuthFailed):
        exchange.server_final(bad[index])


@settings(max_examples=300)
@given(client_first=st.binary(max_size=60) | st.text(max_size=40).map(lambda t: ("n,," + t).encode()))
def test_arbitrary_client_first_raises_only_auth_failed(client_first: bytes) -> None:
    try:
        server_first = _exchange().server_first(client_first)
    except AuthFailed:
        return
    assert server_first.startswith(b"r=")


@settings(max_examples=300)
@given(tail=st.binary(max_size=60) | st.text(max_size=60).map(str.encode), prefixed=st.booleans())
def test_arbitrary_client_final_raises_only_auth_failed(tail: bytes, prefixed: bool) -> None:
    exchange = _exchange()
    server_first = exchange.server_first(RfcClient(PASSWORD).first())
    client_final = (_final_without_proof(server_first).encode() + b",p=" if prefixed else b"") + tail
    with pytest.raises(AuthFailed):
        exchange.server_final(client_final)


# --------------------------------------------------------------------------- md5


def test_md5_password_known_value() -> None:
    # Computed with md5sum(1): md5("secretpostgres") = 53f48b7c..., then md5(that hex + salt).
    assert md5_password("postgres", "secret", b"\x01\x02\x03\x04") == "md5bb41a296aab6baccb36ff243a562abff"


@settings(max_examples=200)
@given(user=st.text(max_size=20), password=st.text(max_size=20), salt=st.binary(min_size=4, max_size=4))
def test_md5_password_matches_the_documented_formula(user: str, password: str, salt: bytes) -> None:
    inner = hashlib.md5(password.encode() + user.encode(), usedforsecurity=False).hexdigest()
    expected = "md5" + hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest()
    assert md5_password(user, password, salt) == expected
