"""The audit chain's byte-level pieces and the spool, without a database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.audit.record import GENESIS, Sealed, SpoolLineError, canonical, check_link, parse_line, seal
from gateway.audit.spool import Spool, SpoolError, read_anchors

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=6), st.integers(1, 2**40))
def test_a_sealed_record_survives_its_spool_line(record: dict[str, object], seq: int) -> None:
    sealed = seal(seq, GENESIS, record)
    line = sealed.line()
    assert line.count(b"\n") == 1  # one record, one line, whatever the text holds
    assert parse_line(line) == sealed
    assert sealed.record() == record


def test_canonical_form_is_key_order_independent() -> None:
    assert (
        canonical({"b": 1, "a": "日本"}) == canonical({"a": "日本", "b": 1}) == '{"a":"日本","b":1}'.encode()
    )


def test_damaged_lines_are_refused() -> None:
    line = seal(3, GENESIS, {"kind": "statement"}).line()
    with pytest.raises(SpoolLineError, match="incomplete"):
        parse_line(line[:-1])
    with pytest.raises(SpoolLineError, match="does not match its hash"):
        parse_line(line.replace(b"statement", b"statemenT"))
    with pytest.raises(SpoolLineError, match="malformed"):
        parse_line(b"x\ty\tz\t{}\n")


def _chain(n: int) -> list[Sealed]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        sealed = seal(seq, prev, {"kind": "statement", "n": seq})
        out.append(sealed)
        prev = sealed.hash
    return out


def _first_break(records: list[Sealed]) -> tuple[int, str] | None:
    expected, prev = 1, GENESIS
    for sealed in records:
        problem = check_link(expected, prev, sealed)
        if problem is not None:
            return problem.seq, problem.reason
        expected, prev = sealed.seq + 1, sealed.hash
    return None


def test_check_link_names_deleted_edited_and_reordered_records() -> None:
    chain = _chain(6)
    assert _first_break(chain) is None
    deleted = chain[:2] + chain[3:]
    assert _first_break(deleted) == (4, "record 3 is missing before it (deleted)")
    two_gone = chain[:2] + chain[4:]
    assert _first_break(two_gone) == (5, "records 3-4 are missing before it (deleted)")
    forged = seal(3, chain[1].hash, {"kind": "statement", "n": 99})
    edited = [*chain[:2], Sealed(3, chain[2].prev, chain[2].hash, forged.body), *chain[3:]]
    assert _first_break(edited) == (3, "its content does not match its hash (the record was edited)")
    swapped = [*chain[:2], chain[3], chain[2], *chain[4:]]
    # Moved records look deleted where they left from (the verifier names the first place).
    assert _first_break(swapped) == (4, "record 3 is missing before it (deleted)")
    renumbered = [*chain[:2], Sealed(3, chain[3].prev, chain[3].hash, chain[3].body)]
    assert _first_break(renumbered) == (3, "its content does not match its hash (the record was edited)")
    replaced = [*chain[:2], seal(3, GENESIS, {"kind": "statement", "n": 3}), *chain[3:]]
    assert _first_break(replaced) == (
        3,
        "it does not link to the record before it (records were deleted, reordered or replaced)",
    )


def test_spool_recovers_its_tail_and_what_is_undelivered(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "gw", segment_bytes=300)
    spool.open()
    chain = spool.chain
    assert chain.startswith("gw-")
    prev = GENESIS
    for seq in range(1, 11):
        sealed = seal(seq, prev, {"kind": "statement", "n": seq})
        spool.append(sealed)
        prev = sealed.hash
    assert len(list(tmp_path.glob("segment-*.log"))) > 1  # rotated
    batch, position = spool.read(4)
    assert [s.seq for s in batch] == [1, 2, 3, 4]
    spool.ack(batch[-1], position)
    spool.close()

    again = Spool(tmp_path, "gw", segment_bytes=300)
    again.open()
    assert again.chain == chain  # the same chain continues
    assert (again.next_seq, again.last_hash) == (11, prev)
    assert again.delivered_seq == 4
    rest, position = again.read(100)
    assert [s.seq for s in rest] == [5, 6, 7, 8, 9, 10]
    again.ack(rest[-1], position)
    assert again.undelivered_bytes == 0
    assert len(list(tmp_path.glob("segment-*.log"))) == 1  # delivered segments are gone
    anchors = read_anchors(tmp_path)
    assert [(a.chain, a.seq, a.hash) for a in anchors] == [(chain, 10, prev)]
    again.close()


def test_spool_cuts_a_torn_last_line(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "gw")
    spool.open()
    first = seal(1, GENESIS, {"kind": "a"})
    second = seal(2, first.hash, {"kind": "b"})
    spool.append(first)
    spool.append(second)
    spool.close()
    segment = next(tmp_path.glob("segment-*.log"))
    with segment.open("ab") as handle:
        handle.write(seal(3, second.hash, {"kind": "c"}).line()[:20])  # a machine crash mid-write
    recovered = Spool(tmp_path, "gw")
    recovered.open()
    assert (recovered.next_seq, recovered.last_hash) == (3, second.hash)
    assert [s.seq for s in recovered.read(10)[0]] == [1, 2]
    assert segment.read_bytes().endswith(b"\n")
    recovered.close()


def test_spool_in_an_unusable_directory_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match="audit spool"):
        Spool(blocker / "spool", "gw").open()
    assert not os.path.exists(blocker / "spool")
