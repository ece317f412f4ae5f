"""`latentwire train | export | demo` flags (issue 11)."""

from __future__ import annotations

import pytest

from latentwire.runtime.cli import build_parser


@pytest.mark.parametrize("flag", ["--hidden", "--channels"])
@pytest.mark.parametrize(
    "value", ["128,,64", "128,", ",128", " , ", "64,0", "0", "64,-1", "1.5", "64;32", "128 64"]
)
def test_comma_lists_refuse_empty_zero_and_negative_items(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["train", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and repr(value) in err, err


def test_comma_lists_take_spaces_around_items() -> None:
    args = build_parser().parse_args(["train", "--hidden", " 128, 64 ", "--channels", "8,16"])
    assert args.hidden == (128, 64) and args.channels == (8, 16)
