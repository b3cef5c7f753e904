"""``cpvctl ui`` argv through the real parser and ``main``."""

from __future__ import annotations

import pytest

from cpvctl.cli import build_parser, main


def test_ui_takes_a_port_and_no_browser() -> None:
    args = build_parser().parse_args(["ui", "--port", "8765", "--no-browser"])
    assert (args.verb, args.port, args.no_browser) == ("ui", 8765, True)
    args = build_parser().parse_args(["ui"])
    assert (args.port, args.no_browser) == (0, False)  # a free port, open a browser


@pytest.mark.parametrize("port", ["eighty", "-1", "65536"])
def test_a_bad_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--port", port]) == 2
    assert "--port" in capsys.readouterr().err
