"""voxtra.pipeline.heard: the words of a cut answer the caller heard."""

from __future__ import annotations

from voxtra.pipeline.heard import MS_PER_CHAR, heard_words, prefix_words


def test_prefix_words_keeps_only_whole_words() -> None:
    text = "open from nine to five"
    assert prefix_words(text, 0.0) == ""
    assert prefix_words(text, 4 / len(text)) == "open"  # "open" ends exactly there
    assert prefix_words(text, 6 / len(text)) == "open"  # "from" only begun
    assert prefix_words(text, 1.0) == text


def test_a_complete_answer_is_cut_by_its_audio() -> None:
    text = "one two three four"  # 18 characters over 1800 ms of audio
    assert heard_words(text, 0.0, 1800.0, complete=True) == ""
    assert heard_words(text, 800.0, 1800.0, complete=True) == "one two"
    assert heard_words(text, 1800.0, 1800.0, complete=True) == text


def test_an_answer_still_arriving_is_cut_by_its_expected_length() -> None:
    text = "one two three four"
    # 500 ms of audio so far: the text's length at MS_PER_CHAR is the better guess
    total = len(text) * MS_PER_CHAR
    assert heard_words(text, total * 8 / 18, 500.0, complete=False) == "one two"
    # more audio than the text's length suggests: the audio's length counts
    assert heard_words(text, 2000.0, 4000.0, complete=False) == "one two"
