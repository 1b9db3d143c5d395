"""Pure: the group and version an apiVersion names ("apps/v1" -> "apps", "v1"; "v1" -> "", "v1").

`kube.Kind` and `builders.OwnedKind` both describe a kind by its apiVersion, and neither layer may
import the other (docs/architecture.md, "Layers and what each may import"): both take their
`group` and `version` from here.
"""

from __future__ import annotations


def split_api_version(api_version: str) -> tuple[str, str]:
    """(group, version); the core group is ""."""
    group, _, version = api_version.rpartition("/")
    return group, version


class GroupVersion:
    """`group` and `version` of a class's `api_version` (a mixin for the kinds' dataclasses)."""

    __slots__ = ()
    api_version: str

    @property
    def group(self) -> str:
        return split_api_version(self.api_version)[0]

    @property
    def version(self) -> str:
        return split_api_version(self.api_version)[1]
