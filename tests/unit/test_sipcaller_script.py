"""The scripted SIP caller's DTMF script syntax (pure parsing; no phone, no Asterisk)."""

from __future__ import annotations

import pytest

from voxtra.testing.sipcaller import SipCallerError, main, parse_dtmf_script


@pytest.mark.parametrize(
    ("script", "steps"),
    [
        ("1", ["1"]),
        ("123#", ["1", "2", "3", "#"]),
        ("1w2", ["1", 0.5, "2"]),
        ("1W2", ["1", 1.0, "2"]),
        ("1wW2ww3", ["1", 1.5, "2", 1.0, "3"]),
        ("ww1", [1.0, "1"]),  # a pause first waits after --dtmf-delay
        ("1w", ["1", 0.5]),
        ("*0 a D", ["*", "0", "A", "D"]),  # spaces ignored, a-d as A-D
    ],
)
def test_scripts_parse_into_digits_and_merged_pauses(script: str, steps: list[object]) -> None:
    assert parse_dtmf_script(script) == steps


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("12x", r"'x' at position 2"),
        ("1,2", r"',' at position 1"),
        ("1p2", r"'p' at position 1"),
        ("", "has no digits"),
        ("wW", "has no digits"),
    ],
)
def test_bad_scripts_are_clear_errors(script: str, message: str) -> None:
    with pytest.raises(SipCallerError, match=message):
        parse_dtmf_script(script)


def test_command_line_rejects_a_bad_script_before_dialing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No phone starts (nothing listens on the target): the script is checked first.
    assert main(["dial", "sip:1@127.0.0.1:9", "--dtmf", "1,2"]) == 1
    assert "invalid DTMF script" in capsys.readouterr().err


def test_command_line_rejects_a_negative_delay(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dial", "600", "--dtmf", "1", "--dtmf-delay", "-1"])
    assert "--dtmf-delay must not be negative" in capsys.readouterr().err
