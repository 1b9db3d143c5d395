"""The chart's ValidatingAdmissionPolicy on a real API server (marker e2e, fixture kube_cluster).

The policy and binding are rendered by helm with the policy on, bound to this module's namespace
only (other tests share the cluster) and applied with kubectl. The API server compiles and
type-checks a policy asynchronously, so the fixture waits until a known-bad HypersendCluster is
refused in a server-side dry run before any test runs. Then: a disallowed image, a `*-snippet`
Ingress annotation and each disallowed Secret reference are refused with the policy's message; a
compliant cluster is admitted; a cluster created before the policy can still be annotated (the
operator and `kubectl hypersend` do that) but not have its spec changed until it complies.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypersend_operator import crd
from hypersend_operator.api import API_VERSION, CRD_NAME, KIND

from tests.fixtures.kube import KubeCluster
from tests.unit.delivery import helm

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_IMAGE = "registry.example.com/hypersend/chatserver:0.1.0"
BAD_IMAGE = "docker.io/evil/chatserver:1"


@pytest.fixture(scope="module")
def namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    kube_cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / crd.CRD_FILENAME)
    )
    kube_cluster.wait_crd_established(CRD_NAME)  # left installed: other tests use it too
    name = f"hs-vap-{uuid.uuid4().hex[:6]}"
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def cluster(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    chat = {"image": ALLOWED_IMAGE, **spec.pop("chat", {})}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"chat": chat, **spec},
    }


def external_redis(secret: str) -> dict[str, Any]:
    return {"mode": "External", "external": {"urlSecretRef": {"name": secret, "key": "url"}}}


def atlas(secret: str) -> dict[str, Any]:
    return {"mode": "Atlas", "atlas": {"connectionSecretRef": {"name": secret, "key": "uri"}}}


def create(kube: KubeCluster, obj: dict[str, Any], *flags: str) -> subprocess.CompletedProcess[str]:
    return kube.kubectl("create", *flags, "-f", "-", input=json.dumps(obj), check=False)


def render(values: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    """The chart's policy and binding for these `admissionPolicy` values, as helm renders them."""
    values_file = directory / f"values-{uuid.uuid4().hex[:6]}.yaml"
    values_file.write_text(yaml.safe_dump({"admissionPolicy": {"enabled": True, **values}}))
    rendered = helm.helm(
        "template", f"vap-{uuid.uuid4().hex[:6]}", str(helm.CHART), "-f", str(values_file),
        "--show-only", "templates/admissionpolicy.yaml",
    ).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert [d["kind"] for d in docs] == [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ]
    return docs


def apply(kube: KubeCluster, *docs: dict[str, Any]) -> None:
    kube.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))


def delete_policy(kube: KubeCluster, name: str) -> None:
    kube.kubectl(
        "delete", "validatingadmissionpolicybinding", name, "--ignore-not-found", check=False
    )
    kube.kubectl("delete", "validatingadmissionpolicy", name, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def policy(
    kube_cluster: KubeCluster, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The chart's policy and binding, in effect for `namespace`; yields the policy's name."""
    kube = kube_cluster
    # Before the policy: a cluster that breaks its image rule (test_a_cluster_from_before...).
    legacy = cluster("legacy", namespace, chat={"image": BAD_IMAGE})
    assert create(kube, legacy).returncode == 0
    docs = render(
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "allowedImagePrefixes": ["registry.example.com/hypersend/"],
            "allowedSecretNames": ["wildcard-tls"],
            "allowedSecretNamePrefixes": ["hypersend-"],
            # forbiddenIngressAnnotationPatterns: the chart's default, *-snippet
        },
        tmp_path_factory.mktemp("vap"),
    )
    name = docs[0]["metadata"]["name"]
    try:
        apply(kube, *docs)
        # In effect once a known-bad cluster is refused by this policy (dry run: nothing stays).
        bad = cluster("probe", namespace, chat={"image": BAD_IMAGE})
        kube.wait_for(
            lambda: name in create(kube, bad, "--dry-run=server").stderr,
            timeout=120,
            what=f"ValidatingAdmissionPolicy {name} to refuse a bad image",
        )
        yield name
    finally:
        delete_policy(kube, name)


def type_checking(kube: KubeCluster, name: str) -> dict[str, Any]:
    """The policy's status.typeChecking, once the API server has checked its current generation
    against the CRD's schema (asynchronously, after the policy is written)."""

    seen: list[Any] = []

    def checked() -> dict[str, Any] | None:
        live = kube.json("get", "validatingadmissionpolicy", name)
        status = live.get("status", {})
        seen[:] = [live["metadata"]["generation"], status]
        done = status.get("observedGeneration") == live["metadata"]["generation"]
        # The status (truthy), not typeChecking itself: without warnings that is {}.
        return dict(status) if done and "typeChecking" in status else None

    try:
        found = kube.wait_for(checked, timeout=60, what=f"{name} type checking")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last generation and status: {seen}") from exc
    assert found is not None
    return dict(found["typeChecking"])


def refusal(kube: KubeCluster, obj: dict[str, Any], policy: str) -> str:
    proc = create(kube, obj)
    assert proc.returncode != 0, f"admitted: {obj['spec']}"
    assert f"ValidatingAdmissionPolicy '{policy}'" in proc.stderr, proc.stderr
    assert "forbidden" in proc.stderr.lower()
    meta = obj["metadata"]
    found = kube.kubectl("get", KIND, meta["name"], "-n", meta["namespace"], check=False)
    assert found.returncode != 0, "a refused cluster was stored"
    return proc.stderr


def test_the_policy_type_checks_against_the_crd(
    kube_cluster: KubeCluster, policy: str, tmp_path: Path
) -> None:
    """No expression warnings for the policy in use and for variants whose Secret lists are
    empty literals. The API server checks validations and messages against the CRD's schema, not
    the variables they use: the tests below reach every field the variables read."""
    assert not type_checking(kube_cluster, policy).get("expressionWarnings")
    only_prefixes = {"allowedSecretNamePrefixes": ["hypersend-"]}
    only_names = {"allowedSecretNames": ["wildcard-tls"], "allowedImagePrefixes": ["r.io/"]}
    variants = [render(values, tmp_path)[0] for values in (only_prefixes, only_names)]
    try:
        apply(kube_cluster, *variants)  # no binding: they check nothing
        for variant in variants:
            name = variant["metadata"]["name"]
            assert not type_checking(kube_cluster, name).get("expressionWarnings"), name
    finally:
        for variant in variants:
            delete_policy(kube_cluster, variant["metadata"]["name"])


def test_a_disallowed_image_is_refused(
    kube_cluster: KubeCluster, namespace: str, policy: str
) -> None:
    err = refusal(kube_cluster, cluster("bad-image", namespace, chat={"image": BAD_IMAGE}), policy)
    assert f'spec.chat.image "{BAD_IMAGE}": image not allowed' in err
    assert "images must start with one of: registry.example.com/hypersend/" in err
    # A look-alike host does not pass for the allowed registry.
    lookalike = "registry.example.com.evil.io/hypersend/chatserver:0.1.0"
    err = refusal(kube_cluster, cluster("lookalike", namespace, chat={"image": lookalike}), policy)
    assert f'spec.chat.image "{lookalike}"' in err
    # Redis's and MongoDB's images are held to the same rule.
    redis = {"mode": "InCluster", "inCluster": {"image": "docker.io/library/redis:7"}}
    err = refusal(kube_cluster, cluster("bad-redis", namespace, redis=redis), policy)
    assert 'spec.redis.inCluster.image "docker.io/library/redis:7"' in err
    # An inCluster block without an image gets the CRD's default before admission: checked too.
    mongo = {"mode": "InCluster", "inCluster": {"storage": {"size": "1Gi"}}}
    err = refusal(kube_cluster, cluster("default-mongo", namespace, mongo=mongo), policy)
    assert 'spec.mongo.inCluster.image "docker.io/library/mongo:' in err


def test_a_snippet_annotation_is_refused(
    kube_cluster: KubeCluster, namespace: str, policy: str
) -> None:
    for key in (
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "nginx.ingress.kubernetes.io/Server-Snippet",
    ):
        ingress = {
            "enabled": True,
            "host": "chat.example.com",
            "annotations": {
                key: "return 200;",
                "nginx.ingress.kubernetes.io/proxy-body-size": "1m",
            },
        }
        err = refusal(kube_cluster, cluster("snippet", namespace, ingress=ingress), policy)
        assert f"spec.ingress.annotations: {key} forbidden by the platform admission policy" in err
        assert "(patterns: *-snippet)" in err
        assert "proxy-body-size" not in err


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"redis": external_redis("db-admin")}, "spec.redis.external.urlSecretRef"),
        ({"mongo": atlas("db-admin")}, "spec.mongo.atlas.connectionSecretRef"),
        (
            {"ingress": {"enabled": True, "host": "chat.example.com", "tlsSecretName": "db-admin"}},
            "spec.ingress.tlsSecretName",
        ),
    ],
)
def test_a_disallowed_secret_is_refused(
    kube_cluster: KubeCluster, namespace: str, policy: str, spec: dict[str, Any], field: str
) -> None:
    err = refusal(kube_cluster, cluster("bad-secret", namespace, **spec), policy)
    assert f'{field} "db-admin": Secret not allowed by the platform admission policy' in err
    assert "allowed names: [wildcard-tls], name prefixes: [hypersend-]" in err


def test_a_compliant_cluster_is_admitted(
    kube_cluster: KubeCluster, namespace: str, policy: str
) -> None:
    obj = cluster(
        "compliant",
        namespace,
        redis=external_redis("hypersend-redis"),
        mongo=atlas("hypersend-atlas"),
        ingress={
            "enabled": True,
            "host": "chat.example.com",
            "tlsSecretName": "wildcard-tls",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
        },
    )  # fmt: skip
    proc = create(kube_cluster, obj)
    assert proc.returncode == 0, proc.stderr
    live = kube_cluster.json("get", KIND, "compliant", "-n", namespace)
    assert live["spec"]["chat"]["image"] == ALLOWED_IMAGE
    # A spec change that stays compliant is admitted too; one that breaks a rule is not.
    patch = kube_cluster.kubectl(
        "patch", KIND, "compliant", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"chat": {"replicas": 3}}}), check=False,
    )  # fmt: skip
    assert patch.returncode == 0, patch.stderr
    patch = kube_cluster.kubectl(
        "patch", KIND, "compliant", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"ingress": {"tlsSecretName": "db-admin"}}}), check=False,
    )  # fmt: skip
    assert patch.returncode != 0
    assert 'spec.ingress.tlsSecretName "db-admin"' in patch.stderr


def test_a_cluster_from_before_the_policy_keeps_metadata_updates_only(
    kube_cluster: KubeCluster, namespace: str, policy: str
) -> None:
    """Annotations (pause, restart, kopf's bookkeeping) and finalizers never touch the spec, so
    they pass; any spec change re-checks the whole spec."""
    annotate = kube_cluster.kubectl(
        "annotate", KIND, "legacy", "-n", namespace, "hypersend.io/paused=true", check=False
    )
    assert annotate.returncode == 0, annotate.stderr
    patch = kube_cluster.kubectl(
        "patch", KIND, "legacy", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"chat": {"replicas": 3}}}), check=False,
    )  # fmt: skip
    assert patch.returncode != 0
    assert f'spec.chat.image "{BAD_IMAGE}": image not allowed' in patch.stderr
    fixed = kube_cluster.kubectl(
        "patch", KIND, "legacy", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"chat": {"image": ALLOWED_IMAGE}}}), check=False,
    )  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
