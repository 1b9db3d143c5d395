"""The chart's optional ValidatingAdmissionPolicy, rendered by the real helm: off by default, its
values schema, and its CEL covering every image and every Secret reference the HypersendCluster
API models have (a new SecretKeyRef or `*Secret*` field in api/spec.py fails here until the policy
covers it). tests/e2e/test_admission_policy.py runs the policy on a real API server."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from hypersend_operator.api import VERSION, HypersendClusterSpec, SecretKeyRef
from hypersend_operator.api.base import ApiModel
from hypersend_operator.builders import user_secret_refs
from pydantic import BaseModel

from tests.unit.delivery import helm
from tests.unit.operator.support import spec

pytestmark = pytest.mark.unit

POLICY = "ValidatingAdmissionPolicy"
BINDING = "ValidatingAdmissionPolicyBinding"
ENABLED = {
    "admissionPolicy.enabled": "true",
    "admissionPolicy.allowedImagePrefixes[0]": "registry.example.com/hypersend/",
    "admissionPolicy.allowedSecretNamePrefixes[0]": "hypersend-",
    "admissionPolicy.allowedSecretNames[0]": "wildcard-tls",
}


def variables(policy: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v["expression"] for v in policy["spec"].get("variables", [])}


def models_in(annotation: Any) -> Iterator[Any]:
    """Every type inside an annotation (unions, Optional, Annotated, list, dict)."""
    yield annotation
    for arg in typing.get_args(annotation):
        yield from models_in(arg)


def spec_fields(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, set[Any]]]:
    """(wire path, Python name, the types in its annotation) of every field, depth first."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        found = set(models_in(field.annotation))
        list_like = any(typing.get_origin(t) is list for t in found)
        yield path, name, found
        for t in found:
            if isinstance(t, type) and issubclass(t, ApiModel) and t is not SecretKeyRef:
                yield from spec_fields(t, f"{path}[]" if list_like else path)


def secret_fields() -> set[str]:
    return {
        path
        for path, name, found in spec_fields(HypersendClusterSpec, "spec")
        if SecretKeyRef in found or "secret" in name.lower()
    }


def image_fields() -> set[str]:
    return {path for path, name, _ in spec_fields(HypersendClusterSpec, "spec") if name == "image"}


def test_default_chart_renders_no_policy() -> None:
    kinds = {o["kind"] for o in helm.render()}
    assert POLICY not in kinds
    assert BINDING not in kinds
    assert "admissionregistration.k8s.io" not in helm.template_text()


def test_enabled_renders_a_policy_and_a_deny_binding() -> None:
    objs = helm.render(ENABLED)
    policy, binding = helm.one(objs, POLICY), helm.one(objs, BINDING)
    assert policy["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # every namespace
    spec_ = policy["spec"]
    assert spec_["failurePolicy"] == "Fail"
    (rule,) = spec_["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == ["hypersend.io"]
    assert rule["resources"] == ["hypersendclusters"]  # not status: the operator writes it
    assert rule["operations"] == ["CREATE", "UPDATE"]
    # A named version (the API server type-checks only those), other versions by conversion.
    assert rule["apiVersions"] == [VERSION]
    assert spec_["matchConstraints"]["matchPolicy"] == "Equivalent"
    assert len(spec_["validations"]) == 3
    for validation in spec_["validations"]:
        assert validation["reason"] == "Forbidden"
        assert "\n" not in validation["message"]
        assert validation["messageExpression"]


def test_binding_takes_actions_and_a_namespace_selector() -> None:
    values = {
        **ENABLED,
        "admissionPolicy.validationActions": "{Warn,Audit}",
        "admissionPolicy.namespaceSelector.matchLabels.team": "chat",
    }
    binding = helm.one(helm.render(values), BINDING)
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    assert binding["spec"]["matchResources"] == {
        "namespaceSelector": {"matchLabels": {"team": "chat"}}
    }


def test_policy_covers_every_secret_reference_of_the_api() -> None:
    """Each Secret a spec can name is in the policy, read as `object.<path>`; nothing else is."""
    fields = secret_fields()
    assert fields == {
        "spec.redis.external.urlSecretRef",
        "spec.mongo.atlas.connectionSecretRef",
        "spec.ingress.tlsSecretName",
    }, "the API's Secret references changed: update templates/admissionpolicy.yaml"
    # The operator's own list of user Secrets is among them.
    both = spec(
        redis={"mode": "External", "external": {"urlSecretRef": {"name": "r", "key": "url"}}},
        mongo={"mode": "Atlas", "atlas": {"connectionSecretRef": {"name": "m", "key": "uri"}}},
    )
    assert {f"spec.{ref.field}" for ref in user_secret_refs(both)} <= fields

    refs = variables(helm.one(helm.render(ENABLED), POLICY))["secretRefs"]
    assert set(re.findall(r"'(spec\.[A-Za-z.]+)'", refs)) == fields
    for field in fields:
        assert f"has(object.{field})" in refs, f"{field}: absent optional field not guarded"
        name = "" if field.endswith("SecretName") else ".name"
        assert f"string(object.{field}{name})" in refs


def test_policy_covers_every_image_of_the_api() -> None:
    fields = image_fields()
    assert fields == {"spec.chat.image", "spec.redis.inCluster.image", "spec.mongo.inCluster.image"}
    images = variables(helm.one(helm.render(ENABLED), POLICY))["images"]
    assert set(re.findall(r"'(spec\.[A-Za-z.]+)'", images)) == fields
    for field in fields:
        assert f"has(object.{field})" in images


def test_every_optional_parent_is_guarded_with_has() -> None:
    """CEL fails on a missing field: each access to spec.a.b.c is preceded by has() of a, a.b."""
    for name, expression in variables(helm.one(helm.render(ENABLED), POLICY)).items():
        for access in set(re.findall(r"object\.spec((?:\.[A-Za-z]+)+)", expression)):
            parts = access.strip(".").split(".")
            for depth in range(1, len(parts)):
                parent = "object.spec." + ".".join(parts[:depth])
                assert f"has({parent})" in expression, f"{name}: {parent} used unguarded"


def test_forbidden_annotation_globs_become_anchored_regexes() -> None:
    values = {
        "admissionPolicy.enabled": "true",
        "admissionPolicy.forbiddenIngressAnnotationPatterns": (
            "{*-snippet,Nginx.ingress.kubernetes.io/auth-*}"
        ),
    }
    policy = helm.one(helm.render(values), POLICY)
    regexes = variables(policy)["forbiddenAnnotationRegexes"]
    assert regexes == r'["^.*-snippet$","^nginx\\.ingress\\.kubernetes\\.io/auth-.*$"]'
    # The same strings as CEL reads them (JSON and CEL share these escapes); RE2 agrees with
    # Python's re on them.
    compiled = [re.compile(r.replace("\\\\", "\\")) for r in re.findall(r'"([^"]*)"', regexes)]

    def refused(key: str) -> bool:
        return any(r.search(key.lower()) for r in compiled)

    for key in (
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "nginx.ingress.kubernetes.io/server-snippet",
        "nginx.ingress.kubernetes.io/Server-Snippet",
        "nginx.ingress.kubernetes.io/auth-url",
    ):
        assert refused(key), key
    for key in (
        "nginx.ingress.kubernetes.io/proxy-read-timeout",
        "nginx.ingress.kubernetes.io/snippet-free",
        "nginxXingress.kubernetes.io/auth-url",  # "." is literal
    ):
        assert not refused(key), key
    # Only the annotation check: the image and Secret lists are empty.
    assert len(policy["spec"]["validations"]) == 1


def test_default_patterns_refuse_snippets() -> None:
    policy = helm.one(helm.render({"admissionPolicy.enabled": "true"}), POLICY)
    assert variables(policy)["forbiddenAnnotationRegexes"] == '["^.*-snippet$"]'


def test_enabled_with_nothing_to_check_is_refused() -> None:
    values = {
        "admissionPolicy.enabled": "true",
        "admissionPolicy.forbiddenIngressAnnotationPatterns": "null",
    }
    proc = helm.helm("template", "hs", str(helm.CHART), *helm.set_args(values), check=False)
    assert proc.returncode != 0
    assert "admissionPolicy.enabled needs something to check" in proc.stderr


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {"admissionPolicy.validationActions": "{Deny,Warn}"},
            "/admissionPolicy/validationActions",
        ),
        ({"admissionPolicy.validationActions": "{Block}"}, "/admissionPolicy/validationActions"),
        # Without "/", registry.example.com would also admit registry.example.com.evil.io/x.
        (
            {"admissionPolicy.allowedImagePrefixes[0]": "registry.example.com"},
            "/admissionPolicy/allowedImagePrefixes/0",
        ),
        (
            {"admissionPolicy.allowedImagePrefixes[0]": "registry.example.com/x'"},
            "/admissionPolicy/allowedImagePrefixes/0",
        ),
        (
            {"admissionPolicy.forbiddenIngressAnnotationPatterns[0]": "a b"},
            "/admissionPolicy/forbiddenIngressAnnotationPatterns/0",
        ),
        (
            {"admissionPolicy.allowedSecretNames[0]": "Not_A_Name"},
            "/admissionPolicy/allowedSecretNames/0",
        ),
        (
            {"admissionPolicy.allowedSecretNamePrefixes[0]": "-x"},
            "/admissionPolicy/allowedSecretNamePrefixes/0",
        ),
        ({"admissionPolicy.denyAll": "true"}, "denyAll"),
    ],
)
def test_values_schema_refuses_bad_policy_values(values: dict[str, str], complaint: str) -> None:
    proc = helm.helm(
        "template", "hs", str(helm.CHART), *helm.set_args({**ENABLED, **values}), check=False
    )
    assert proc.returncode != 0
    assert complaint in proc.stderr


def test_lint_is_clean_with_the_policy_on() -> None:
    """helm lint renders every template, NOTES.txt included, with these values."""
    out = helm.helm("lint", "--strict", str(helm.CHART), *helm.set_args(ENABLED)).stdout
    assert "0 chart(s) failed" in out
