"""Write the chart's Prometheus rule files from `builders.alerts` (`--check`: fail on drift).

`python -m hypersend_operator.rulefiles` writes `charts/hypersend-operator/files/rules/*.yaml`:
the same alert definitions the operator puts in a HypersendCluster's PrometheusRule, for every
cluster at once. They are plain Prometheus rule files (`rule_files:` in prometheus.yml), and the
chart's PrometheusRule template embeds them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from hypersend_operator.builders.alerts import chart_rule_files

DEFAULT_DIR = (
    Path(__file__).resolve().parents[2] / "charts" / "hypersend-operator" / "files" / "rules"
)
HEADER = (
    "# Generated from hypersend_operator.builders.alerts by "
    "`python -m hypersend_operator.rulefiles`; do not edit.\n"
)


def render(doc: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(doc, sort_keys=False, width=10_000, allow_unicode=True)


def rendered() -> dict[str, str]:
    """File name -> content, as the chart should hold them."""
    return {name: render(doc) for name, doc in chart_rule_files().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)
    directory: Path = args.dir
    stale = []
    for name, wanted in rendered().items():
        path = directory / name
        if args.check:
            if not path.exists() or path.read_text() != wanted:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wanted)
        print(f"wrote {path}")
    if stale:
        for path in stale:
            print(
                f"{path} is out of date; run `python -m hypersend_operator.rulefiles`",
                file=sys.stderr,
            )
        return 1
    if args.check:
        print(f"{directory} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
