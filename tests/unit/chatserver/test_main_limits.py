"""The open-files limit the server sets for itself at start (chatserver/__main__.py)."""

from __future__ import annotations

import resource

import pytest

from chatserver.__main__ import nofile_target

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("soft", "hard", "wanted", "target"),
    [
        (1024, 524_288, 42_000, 42_000),  # a container's usual start: raised to what is needed
        (1024, 20_000, 42_000, 20_000),  # the hard limit caps it (a warning is logged)
        (65_536, 524_288, 42_000, 65_536),  # never lowered
        (1024, resource.RLIM_INFINITY, 42_000, 42_000),
    ],
)
def test_soft_limit_is_raised_to_what_the_sockets_need_within_the_hard_one(
    soft: int, hard: int, wanted: int, target: int
) -> None:
    assert nofile_target(soft, hard, wanted) == target
