"""One image naming scheme: the local build (hypersend_devenv.images), the examples, deploy/, the
chart, the docs and the kind script name the same references, all versioned from pyproject.toml."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_devenv import images, versions

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
PUBLIC = ("ghcr.io/", "docker.io/", "quay.io/", "registry.k8s.io/")


def load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def test_every_tag_comes_from_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version == images.VERSION
    assert f"ghcr.io/hypersend/chatserver:{version}" == images.SERVER_IMAGE
    assert f"ghcr.io/hypersend/operator:{version}" == images.OPERATOR_IMAGE
    assert f"localhost/hypersend/pause:{version}" == images.SANDBOX_IMAGE
    assert f"localhost/hypersend/ferretdb:{versions.FERRETDB}" == images.FERRETDB_IMAGE
    assert f"localhost/hypersend/redis:{versions.DEBIAN_REDIS}-bookworm" == images.REDIS_IMAGE
    assert images.PROMETHEUS_IMAGE == "localhost/hypersend/prometheus:3.16.0"
    assert versions.PROMETHEUS == "v0.316.0"
    assert images.PROMETHEUS_ADAPTER_IMAGE.endswith(f":{versions.PROMETHEUS_ADAPTER}")
    assert images.METRICS_SERVER_IMAGE.endswith(f":{versions.METRICS_SERVER}")
    assert {spec.ref() for spec in images.IMAGES.values()} == {
        images.SERVER_IMAGE,
        images.OPERATOR_IMAGE,
        images.REDIS_IMAGE,
        images.FERRETDB_IMAGE,
        images.SANDBOX_IMAGE,
        images.PROMETHEUS_IMAGE,
        images.PROMETHEUS_ADAPTER_IMAGE,
        images.METRICS_SERVER_IMAGE,
    }


def test_dev_example_runs_only_locally_built_images() -> None:
    spec = load("examples/dev.yaml")["spec"]
    assert spec["chat"]["image"] == images.SERVER_IMAGE
    assert spec["redis"]["inCluster"]["image"] == images.REDIS_IMAGE
    assert spec["mongo"]["inCluster"]["image"] == images.FERRETDB_IMAGE


def test_prod_example_names_the_published_server_and_public_datastores() -> None:
    text = (ROOT / "examples/prod.yaml").read_text()
    spec = yaml.safe_load(text)["spec"]
    assert spec["chat"]["image"] == images.SERVER_IMAGE
    assert "localhost/" not in text, "dev-only images do not belong in the production example"
    for store in ("redis", "mongo"):
        image = (spec[store].get("inCluster") or {}).get("image")
        assert image is None or image.startswith(PUBLIC), image


def test_deploy_manifest_runs_the_operator_image() -> None:
    docs = list(yaml.safe_load_all((ROOT / "deploy/operator.yaml").read_text()))
    deployment = next(d for d in docs if d and d["kind"] == "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [images.OPERATOR_IMAGE]


def test_chart_defaults_to_the_operator_image() -> None:
    values = load("charts/hypersend-operator/values.yaml")
    chart = load("charts/hypersend-operator/Chart.yaml")
    assert values["image"]["repository"] == images.OPERATOR_REPOSITORY
    assert values["image"]["tag"] == ""  # the chart's appVersion
    assert chart["appVersion"] == images.VERSION


def test_docs_build_and_name_the_same_references() -> None:
    text = (ROOT / "docs/install.md").read_text()
    assert f"-f Dockerfile.operator -t {images.OPERATOR_IMAGE}" in text
    assert f"-f Dockerfile.server   -t {images.SERVER_IMAGE}" in text
    for ref in (images.REDIS_IMAGE, images.FERRETDB_IMAGE, images.SANDBOX_IMAGE):
        assert ref in text
    # The names before the scheme must not come back.
    assert not re.search(r"\bhypersend-(server|operator):\d", text)
    for name, ref in (("server", images.SERVER_IMAGE), ("operator", images.OPERATOR_IMAGE)):
        assert f"-t {ref}" in (ROOT / f"Dockerfile.{name}").read_text()


def test_kind_script_uses_the_same_names() -> None:
    text = (ROOT / "hack/kind-e2e.sh").read_text()
    assert f"OPERATOR_REPOSITORY={images.OPERATOR_REPOSITORY}\n" in text
    assert f"SERVER_IMAGE={images.SERVER_REPOSITORY}:$TAG\n" in text
    tag_line = next(line for line in text.splitlines() if line.startswith("TAG="))
    proc = subprocess.run(
        ["bash", "-c", f'{tag_line}\nprintf %s "$TAG"'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout == images.VERSION
    assert '--set image.repository="$OPERATOR_REPOSITORY"' in text
