from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxtra.pipeline.chunker import SentenceChunker


def chunk_stream(text: str, step: int = 1, **kw: int) -> list[str]:
    c = SentenceChunker(**kw)
    out: list[str] = []
    for i in range(0, len(text), step):
        out += c.push(text[i : i + step])
    return out + c.flush()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there! How are you? Fine.", ["Hello there!", "How are you?", "Fine."]),
        (
            "Dr. Smith will see you. Bring e.g. your card.",
            ["Dr. Smith will see you.", "Bring e.g. your card."],
        ),
        ("It costs 3.5 dollars. Or 1,000 cents.", ["It costs 3.5 dollars.", "Or 1,000 cents."]),
        ("Open at 10:30: sharp; be early.", ["Open at 10:30:", "sharp;", "be early."]),
        ("Steps:\n1. Open it.\n2. Close it.", ["Steps:", "1. Open it.", "2. Close it."]),
        ('He said "stop." Then left.', ['He said "stop."', "Then left."]),
        ("Wait... what?! No.", ["Wait...", "what?!", "No."]),
        ("Short, then more.", ["Short, then more."]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("  \n ... \n", []),
    ],
)
def test_cases_streamed_char_by_char(text: str, expected: list[str]) -> None:
    assert chunk_stream(text) == expected
    assert chunk_stream(text, step=7) == expected
    assert chunk_stream(text, step=len(text) or 1) == expected


def test_comma_splits_only_after_minimum_length() -> None:
    text = "Well, I think that the order you placed last Tuesday, has shipped today"
    assert chunk_stream(text, min_comma_chars=40) == [
        "Well, I think that the order you placed last Tuesday,",
        "has shipped today",
    ]


def test_piece_is_ready_as_soon_as_the_next_character_arrives() -> None:
    c = SentenceChunker()
    assert c.push("We open at nine.") == []  # could still be "nine.5"
    assert c.push(" We") == ["We open at nine."]
    assert c.push(" close at 5.") == []
    assert c.push("30 pm.\n") == ["We close at 5.30 pm."]
    assert c.flush() == []


def test_overlong_piece_is_cut_at_a_space() -> None:
    text = " ".join(["word"] * 100)
    pieces = chunk_stream(text, max_chars=60)
    assert all(len(p) <= 61 for p in pieces)
    assert " ".join(pieces) == text


@given(st.text(alphabet="ab .,!?;:\n3e.gDr", max_size=200), st.integers(1, 9))
def test_no_word_is_lost_and_splitting_does_not_depend_on_deltas(text: str, step: int) -> None:
    pieces = chunk_stream(text, step=step)
    # Pieces holding only punctuation are dropped; every letter and digit survives, in order.
    assert [ch for ch in "".join(pieces) if ch.isalnum()] == [ch for ch in text if ch.isalnum()]
    assert pieces == chunk_stream(text, step=len(text) or 1)
