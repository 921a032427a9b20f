"""paths.py: which names and paths the tree accepts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectord.errors import InvalidPathError
from collectord.paths import (
    MAX_DEPTH,
    MAX_NAME_BYTES,
    RESERVED_KEY,
    check_name,
    join_path,
    parse_path,
)

# -- check_name: accepted ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "camera",
        "tracking+tail_tracking",  # stytra's naming
        "with space",
        "exposure_ms",
        "Ünïcødé",
        "相机",
        "a.b",
        "...",
        "-leading-dash",
        "trailing$",
        "collectord",  # reserved only as a top-level path component
        "x" * MAX_NAME_BYTES,
    ],
)
def test_check_name_accepts_ordinary_names(name: str) -> None:
    assert check_name(name) == name


def test_check_name_counts_bytes_not_characters() -> None:
    two_byte = "é"
    assert len(two_byte.encode()) == 2
    fits = two_byte * (MAX_NAME_BYTES // 2)
    assert check_name(fits) == fits
    with pytest.raises(InvalidPathError, match="longer"):
        check_name(fits + two_byte)


# -- check_name: refused -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        (".", "not allowed"),
        ("..", "not allowed"),
        ("a/b", "separator"),
        ("/", "separator"),
        ("a\\b", "separator"),
        ("a\x00b", "control or NUL"),
        ("tab\there", "control or NUL"),
        ("new\nline", "control or NUL"),
        ("del\x7f", "control or NUL"),
        ("$bytes", "starts with '\\$'"),
        ("x" * (MAX_NAME_BYTES + 1), "longer"),
        ("gain\ud800", "lone surrogate"),
    ],
)
def test_check_name_refuses(name: str, why: str) -> None:
    with pytest.raises(InvalidPathError, match=why):
        check_name(name)


@pytest.mark.parametrize("name", [None, 3, b"camera", ("a",)])
def test_check_name_refuses_non_strings(name: object) -> None:
    with pytest.raises(InvalidPathError, match="must be a string"):
        check_name(name)


def test_check_name_error_says_where() -> None:
    with pytest.raises(InvalidPathError, match=r"^client name is empty$"):
        check_name("", where="client name")


def test_invalid_path_error_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it.
    with pytest.raises(ValueError):
        check_name("..")


def test_check_name_refuses_c1_control_characters() -> None:
    with pytest.raises(InvalidPathError):
        check_name("next\x85line")


# -- check_name: properties -------------------------------------------------------------

interesting_names = st.one_of(
    st.text(max_size=30),
    st.text(alphabet="./\\$\x00\x1fab", max_size=6),
    st.sampled_from(["", ".", "..", "/", "\\", "\x00", "$x", "a/..", "x" * 201]),
)


@settings(max_examples=200, deadline=None)
@given(interesting_names)
def test_accepted_names_are_safe_file_name_components(name: str) -> None:
    try:
        accepted = check_name(name)
    except InvalidPathError:
        return
    assert accepted == name
    assert name not in ("", ".", "..")
    assert "/" not in name and "\\" not in name
    assert "\x00" not in name
    assert all(ord(c) >= 32 and ord(c) != 127 for c in name)
    assert not name.startswith("$")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES  # valid UTF-8: a JSON key


safe_chars = st.characters(exclude_categories=("Cc", "Cs"), exclude_characters="/\\$")


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=safe_chars, min_size=1, max_size=40))
def test_names_without_forbidden_characters_are_accepted(name: str) -> None:
    if name in (".", ".."):
        return
    assert check_name(name) == name


# -- parse_path -----------------------------------------------------------------------


def test_parse_path_splits_on_slashes() -> None:
    assert parse_path("camera") == ("camera",)
    assert parse_path("camera/settings") == ("camera", "settings")
    assert parse_path("tracking+tail_tracking/with space/é") == (
        "tracking+tail_tracking",
        "with space",
        "é",
    )


def test_join_path_undoes_parse_path() -> None:
    assert join_path(parse_path("a/b/c")) == "a/b/c"


@pytest.mark.parametrize(
    "path", ["", "/etc", "/", "camera/", "camera//settings", "a/./b", "a/../b", "a/\x00"]
)
def test_parse_path_refuses_malformed_paths(path: str) -> None:
    with pytest.raises(InvalidPathError):
        parse_path(path)


def test_parse_path_names_the_bad_component() -> None:
    with pytest.raises(InvalidPathError, match=r"'a/\$b'.*starts with"):
        parse_path("a/$b")


@pytest.mark.parametrize("path", [None, 1, ["a", "b"], ("a",), b"a/b"])
def test_parse_path_refuses_non_strings(path: object) -> None:
    with pytest.raises(InvalidPathError, match="must be a string"):
        parse_path(path)


def test_parse_path_depth_limit() -> None:
    deepest = "/".join(["n"] * MAX_DEPTH)
    assert len(parse_path(deepest)) == MAX_DEPTH
    with pytest.raises(InvalidPathError, match="deeper"):
        parse_path(deepest + "/n")


def test_parse_path_refuses_a_long_component() -> None:
    with pytest.raises(InvalidPathError, match="longer"):
        parse_path("camera/" + "x" * (MAX_NAME_BYTES + 1))


@pytest.mark.parametrize("path", [RESERVED_KEY, f"{RESERVED_KEY}/sources"])
def test_parse_path_refuses_the_reserved_top_level_key(path: str) -> None:
    with pytest.raises(InvalidPathError, match="reserved"):
        parse_path(path)


@pytest.mark.parametrize("path", [f"camera/{RESERVED_KEY}", f"{RESERVED_KEY}2", "Collectord"])
def test_reserved_key_is_only_reserved_exactly_at_the_top(path: str) -> None:
    assert join_path(parse_path(path)) == path


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=safe_chars, min_size=1, max_size=10), min_size=1, max_size=6))
def test_parse_path_round_trips_valid_names(parts: list[str]) -> None:
    if any(p in (".", "..") for p in parts) or parts[0] == RESERVED_KEY:
        return
    assert parse_path(join_path(tuple(parts))) == tuple(parts)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab/.\\$\x00 ", max_size=12))
def test_parse_path_result_is_made_of_checked_names(path: str) -> None:
    try:
        parts = parse_path(path)
    except InvalidPathError:
        return
    assert join_path(parts) == path
    assert 1 <= len(parts) <= MAX_DEPTH
    for part in parts:
        assert check_name(part) == part
