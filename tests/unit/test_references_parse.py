"""References (DESIGN.md "References"): the syntax in cpvctl.protocol, and which commit a
stage points at (cpvd.registry.index.stage_holders, GTO's rule) as pure functions."""

from __future__ import annotations

import pytest

from cpvctl.client import reference
from cpvctl.errors import UsageError
from cpvctl.protocol import ProtocolError, Ref, parse_ref, ref_of
from cpvd.registry.index import StageTag, stage_holders


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vision/r50", Ref("vision/r50")),
        ("vision/r50@v1.3.0", Ref("vision/r50", version="v1.3.0")),
        ("vision/r50@v1.3", Ref("vision/r50", version="v1.3.0")),
        ("vision/r50@1.3", Ref("vision/r50", version="v1.3.0")),
        ("vision/r50@latest", Ref("vision/r50", latest=True)),
        ("vision/r50#prod", Ref("vision/r50", stage="prod")),
        ("vision/r50#best", Ref("vision/r50", stage="best")),
        ("a#pre-prod_2", Ref("a", stage="pre-prod_2")),
    ],
)
def test_parse_ref(text: str, expected: Ref) -> None:
    assert parse_ref(text) == expected


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("vision/r50#", "invalid_stage"),
        ("vision/r50#no good", "invalid_stage"),
        ("vision/r50#prod#3", "invalid_stage"),  # a stage *tag*, not a stage
        ("vision/r50#-prod", "invalid_stage"),
        ("vision/r50#pr@d", "invalid_stage"),
        ("vision/r50@", "invalid_version"),
        ("vision/r50@newest", "invalid_version"),
        ("vision/r50@v1.x", "invalid_version"),
        ("vision/r50@v1.3.0@v1.2", "invalid_name"),
        ("vision/r50@latest#prod", "invalid_name"),
        ("#prod", "invalid_name"),
        ("@latest", "invalid_name"),
        ("", "invalid_name"),
        ("bad name@latest", "invalid_name"),
    ],
)
def test_bad_refs_are_refused_with_the_code_that_names_the_part(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_ref(text)
    assert err.value.code == code


def test_bad_version_message_lists_every_form() -> None:
    with pytest.raises(ProtocolError, match="NAME@latest, NAME#STAGE"):
        parse_ref("a/b@newest")


@pytest.mark.parametrize(
    "ref",
    [Ref("a/b"), Ref("a/b", version="v1.2.0"), Ref("a/b", latest=True), Ref("a/b", stage="prod")],
)
def test_str_and_wire_selector_round_trip(ref: Ref) -> None:
    assert parse_ref(str(ref)) == ref
    assert ref_of(ref.name, ref.selector) == ref


def test_selector_is_what_the_daemon_reads_in_the_version_field() -> None:
    assert parse_ref("a/b").selector is None
    assert parse_ref("a/b").is_current
    assert parse_ref("a/b@v2.0").selector == "v2.0.0"
    assert parse_ref("a/b@latest").selector == "latest"
    assert parse_ref("a/b#prod").selector == "#prod"
    assert not parse_ref("a/b#prod").is_current


def test_client_reference_takes_a_ref_or_a_name_and_version_and_exits_2_on_bad() -> None:
    assert reference("a/b@latest") == Ref("a/b", latest=True)
    assert reference("a/b", "v1.1") == Ref("a/b", version="v1.1.0")
    assert reference("a/b", "#prod") == Ref("a/b", stage="prod")
    with pytest.raises(UsageError) as err:
        reference("a/b#not a stage")
    assert err.value.exit_code == 2 and err.value.code == "invalid_stage"


def tag(stage: str, n: int, commit: str, cancel: bool = False, artifact: str = "a") -> StageTag:
    return StageTag(artifact, stage, n, commit, cancel)


def test_a_stage_moved_twice_points_at_the_last_assignment() -> None:
    tags = [tag("prod", 1, "c1"), tag("prod", 2, "c2"), tag("prod", 3, "c1")]
    assert stage_holders(tags) == {("a", "prod"): "c1"}
    assert stage_holders(tags[:2]) == {("a", "prod"): "c2"}


def test_stage_holders_follow_gto_when_an_assignment_is_withdrawn() -> None:
    # prod on c1, then on c2, then withdrawn from c2: GTO shows c1 in prod again
    tags = [tag("prod", 1, "c1"), tag("prod", 2, "c2"), tag("prod", 3, "c2", cancel=True)]
    assert stage_holders(tags) == {("a", "prod"): "c1"}
    # withdrawn from the only version holding it: no version is in the stage
    assert stage_holders([tag("prod", 1, "c1"), tag("prod", 2, "c1", cancel=True)]) == {}


def test_stages_and_artifacts_are_independent() -> None:
    tags = [
        tag("prod", 1, "c1"),
        tag("best", 2, "c2"),
        tag("prod", 1, "d1", artifact="b"),
        tag("prod", 4, "c3"),
    ]
    assert stage_holders(tags) == {("a", "prod"): "c3", ("a", "best"): "c2", ("b", "prod"): "d1"}
