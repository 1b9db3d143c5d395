"""Kubernetes resource quantities ("1500m", "1Gi", "2e3") as numbers, for comparisons.

The parsing is lightkube's (`lightkube.utils.quantity.parse_quantity`: decimal arithmetic, every
SI and binary suffix it knows). Two forms the CRD admits (api/base.py's QUANTITY_PATTERN) are not
in lightkube 1.0.1's table and are rewritten first to an equal plain decimal: the `n` and `u`
suffixes, and an exponent written with an upper-case `E` ("2E3"; a bare trailing `E` is exa).
Like lightkube, the result is rounded up to the milli unit: the API server's canonical forms of one
value then parse equal (`0.0000001` and `100n` alike), and below 1m nothing the operator compares
(CPU, memory, metric values) differs.
"""

from __future__ import annotations

import re
from decimal import Decimal

from lightkube.utils.quantity import parse_quantity as _lightkube_parse

_SUB_MILLI = {"n": Decimal("1e-9"), "u": Decimal("1e-6")}
_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SUB_MILLI_FORM = re.compile(rf"({_NUMBER})([nu])")
_UPPER_EXPONENT = re.compile(rf"({_NUMBER})E([+-]?[0-9]+)")


def parse_quantity(quantity: str) -> float:
    """A quantity as a float ("1500m" -> 1.5, "2k" -> 2000.0, "1Ki" -> 1024.0); ValueError for
    what is not a quantity."""
    q = quantity.strip()
    if m := _SUB_MILLI_FORM.fullmatch(q):
        q = format(Decimal(m[1]) * _SUB_MILLI[m[2]], "f")
    elif m := _UPPER_EXPONENT.fullmatch(q):
        q = f"{m[1]}e{m[2]}"
    value = _lightkube_parse(q)
    if value is None:  # only for None in
        raise ValueError(f"invalid quantity {quantity!r}")
    return float(value)
