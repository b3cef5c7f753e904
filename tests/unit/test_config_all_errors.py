"""A config with several mistakes reports every one of them at once, each naming its key."""

from __future__ import annotations

import pytest

from cpvd.config.load import parse_config
from cpvd.errors import ConfigError

THREE_MISTAKES = """
[storage]
url = "relative/dir"

[registry]
remtoe = "git@example.com:a/b.git"

[[watch]]
path = "/data/a"
artifact = "team/a"
kind = "modle"
"""


def test_three_mistakes_in_three_tables_report_three() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(THREE_MISTAKES, "/etc/cpv.toml")
    lines = err.value.message.splitlines()
    assert len(lines) == 3, lines
    assert any("[storage] url:" in line and "absolute directory" in line for line in lines)
    assert any("[registry]" in line and "unknown key 'remtoe'" in line and "'remote'" in line
               for line in lines)  # fmt: skip
    assert any("[[watch]] #1 kind:" in line for line in lines)
    assert all(line.startswith("/etc/cpv.toml: ") for line in lines)


def test_several_mistakes_in_one_table_and_across_watches_are_all_reported() -> None:
    text = """
[daemon]
rescan_secs = 3
drain_timeout = "soon"

[[watch]]
path = "relative"
artifact = "team/a"

[[watch]]
path = "/data/b"
artifact = "bad name!"

[bogus]
x = 1
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.toml")
    msg = err.value.message
    for part in ("unknown table [bogus]", "unknown key 'rescan_secs'", "drain_timeout:",
                 "[[watch]] #1 path:", "[[watch]] #2 artifact:"):  # fmt: skip
        assert part in msg, msg
    assert len(msg.splitlines()) == 5


def test_several_rule_breaks_in_one_table_are_all_reported() -> None:
    text = """
[storage]
url = "rel"
endpointurl = "x"

[[watch]]
path = "/x"
artifact = "a b"
kind = "m"
settle_seconds = -1
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.toml")
    lines = err.value.message.splitlines()
    assert len(lines) == 5, lines
    for part in ("[storage] unknown key 'endpointurl'", "[storage] url:", "#1 artifact:",
                 "#1 kind:", "#1 settle_seconds:"):  # fmt: skip
        assert any(part in line for line in lines), (part, lines)


def test_one_mistake_is_one_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config('[storage]\nurl = "ftp://x"\n', "c.toml")
    assert len(err.value.message.splitlines()) == 1
