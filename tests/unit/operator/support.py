"""Helpers for the builder tests: a BuildContext from a partial spec, and manifest lookups."""

from __future__ import annotations

from typing import Any

from hypersend_operator.api import HypersendClusterSpec
from hypersend_operator.builders import BuildContext, GeneratedSecrets, build_all

IMAGE = "ghcr.io/hypersend/chatserver:0.1.0"
JWT_KEY = "k" * 43
MONGO_PASSWORD = "p@ss/w:rd"  # characters that must be URL-escaped
MONGO_APP_PASSWORD = "@pp/p:ss"
REDIS_PASSWORD = "r3d!s/p@ss"


def spec(**blocks: Any) -> HypersendClusterSpec:
    chat = {"image": IMAGE, **blocks.pop("chat", {})}
    return HypersendClusterSpec.model_validate({"chat": chat, **blocks})


def ctx(
    capabilities: frozenset[str] = frozenset(), name: str = "demo", **blocks: Any
) -> BuildContext:
    return BuildContext(
        name=name,
        namespace="team-a",
        uid="1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        generation=3,
        spec=spec(**blocks),
        secrets=GeneratedSecrets(
            jwt_keys=JWT_KEY,
            mongo_root_password=MONGO_PASSWORD,
            mongo_app_password=MONGO_APP_PASSWORD,
            redis_password=REDIS_PASSWORD,
        ),
        capabilities=capabilities,
    )


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, got {len(matches)}"
    return matches[0]


def kinds(c: BuildContext) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in build_all(c)]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}
