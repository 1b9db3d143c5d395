"""Pure helpers of the app, API and metrics layers."""

from __future__ import annotations

from typing import Any

import pytest

from chatserver.api import max_body_bytes, validation_message
from chatserver.app import Lifecycle, readiness_problem
from chatserver.config import Settings
from chatserver.metrics import UNMATCHED_ROUTE, route_template
from chatserver.store import direct_room_id, message_id

pytestmark = pytest.mark.unit


def test_readiness_problem_order() -> None:
    ok = Lifecycle()
    assert readiness_problem(ok, None) is None
    assert readiness_problem(Lifecycle(draining=True), "timeout") == "draining"
    assert readiness_problem(ok, "timeout") == "mongodb unreachable: timeout"


def test_validation_message_names_fields() -> None:
    errors: list[dict[str, Any]] = [
        {"loc": ["body", "text"], "msg": "Field required"},
        {"loc": ["query", "limit"], "msg": "Input should be less than or equal to 200"},
    ]
    assert validation_message(errors) == (
        "text: Field required; query.limit: Input should be less than or equal to 200"
    )


def test_body_cap_fits_a_maximal_escaped_message() -> None:
    settings = Settings(jwt_secret="k" * 32, max_message_bytes=1000)  # type: ignore[arg-type]
    assert max_body_bytes(settings) >= 6 * 1000


def test_route_template() -> None:
    class Route:
        path = "/api/v1/rooms/{room_id}"

    assert route_template({"type": "http", "route": Route()}) == "/api/v1/rooms/{room_id}"
    assert route_template({"type": "http"}) == UNMATCHED_ROUTE


def test_direct_room_id_is_symmetric_and_distinct() -> None:
    assert direct_room_id("a", "b") == direct_room_id("b", "a")
    assert direct_room_id("a", "b") != direct_room_id("a", "c")
    # No ambiguity from concatenation.
    assert direct_room_id("ab", "c") != direct_room_id("a", "bc")
    assert message_id("r", 3) == "r:3"
