"""Quantities: every suffix the CRD's quantity pattern admits parses to its value."""

from __future__ import annotations

import re

import pytest
from hypersend_operator.api.base import QUANTITY_PATTERN
from hypersend_operator.quantity import parse_quantity

pytestmark = pytest.mark.unit

CASES = [
    # no suffix, signs, decimals
    ("2", 2.0),
    ("-1", -1.0),
    ("+3", 3.0),
    ("2.5", 2.5),
    (".5", 0.5),
    ("1.", 1.0),
    # decimal SI
    ("5n", 0.001),  # below 1m: rounded up to the milli unit, like lightkube
    ("100u", 0.001),
    ("1500m", 1.5),
    ("2k", 2e3),
    ("3M", 3e6),
    ("1G", 1e9),
    ("2T", 2e12),
    ("1P", 1e15),
    ("1E", 1e18),  # a bare E is exa
    # binary
    ("1Ki", 2.0**10),
    ("512Mi", 512 * 2.0**20),
    ("1Gi", 2.0**30),
    ("1Ti", 2.0**40),
    ("1Pi", 2.0**50),
    ("2Ei", 2 * 2.0**60),
    # decimal exponents, either case
    ("1e3", 1e3),
    ("1E3", 1e3),
    ("2e-3", 0.002),
    ("5E+2", 500.0),
    (" 250m ", 0.25),
]


@pytest.mark.parametrize(("q", "value"), CASES)
def test_every_admitted_form_parses(q: str, value: float) -> None:
    assert re.fullmatch(QUANTITY_PATTERN, q.strip()), f"{q!r} is not admitted by the CRD"
    assert parse_quantity(q) == pytest.approx(value, rel=1e-12)


def test_every_suffix_of_the_pattern_is_covered() -> None:
    suffixes = {re.sub(r"^[+-]?[0-9.]+", "", q.strip()) for q, _ in CASES}
    for suffix in ["n", "u", "m", "k", "M", "G", "T", "P", "E"]:
        assert suffix in suffixes
    for binary in ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]:
        assert binary in suffixes


def test_canonical_forms_of_one_value_are_equal() -> None:
    # What the API server writes back must compare equal to what was asked for (drift).
    assert parse_quantity("0.5") == parse_quantity("500m")
    assert parse_quantity("1000n") == parse_quantity("1u") == parse_quantity("0.000001")
    assert parse_quantity("1024Mi") == parse_quantity("1Gi")
    assert parse_quantity("1e3") == parse_quantity("1k")


# "1e1.5": the CRD's pattern admits a fractional exponent, the API server's parser does not.
@pytest.mark.parametrize("q", ["", "abc", "1x", "1KiB", "Gi", "1e1.5"])
def test_what_is_not_a_quantity_is_refused(q: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)invalid"):
        parse_quantity(q)
