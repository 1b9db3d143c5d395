"""The local cluster's pure parts: command lines, kubeconfigs, manifests, PKI, process groups."""

from __future__ import annotations

import base64
import ipaddress
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypersend_devenv import cluster, metrics_adapter, procs
from hypersend_devenv.pki import CLIENTS, ensure_pki, issue_serving_cert

pytestmark = pytest.mark.unit

PORTS = cluster.Ports(
    etcd_client=2379, etcd_peer=2380, apiserver=6443, controller_manager=10257, scheduler=10259
)
LAYOUT = cluster.Layout(Path("/state"))
BIN = Path("/bin/x")


def flags(argv: list[str]) -> dict[str, str]:
    """--name=value flags of a command line as a dict (each flag given once)."""
    pairs = [a[2:].split("=", 1) for a in argv[1:]]
    assert all(len(p) == 2 for p in pairs), f"flags without =value: {argv}"
    names = [p[0] for p in pairs]
    assert len(names) == len(set(names)), f"repeated flags: {names}"
    return {k: v for k, v in pairs}


def all_command_lines() -> dict[str, list[str]]:
    return {
        "etcd": cluster.etcd_args(BIN, LAYOUT, PORTS),
        "kube-apiserver": cluster.apiserver_args(BIN, LAYOUT, PORTS),
        "kube-controller-manager": cluster.controller_manager_args(BIN, LAYOUT, PORTS),
        "kube-scheduler": cluster.scheduler_args(BIN, LAYOUT, PORTS),
        "kwok": cluster.kwok_args(BIN, LAYOUT),
        "metrics-adapter": metrics_adapter.adapter_args("/bin/x", "/k", ("/c", "/k"), 1, 2),
    }


def test_every_component_listens_and_dials_only_loopback() -> None:
    ranges = {cluster.SERVICE_CIDR, cluster.POD_CIDR}
    for name, argv in all_command_lines().items():
        for value in flags(argv).values():
            for found in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", value):
                if found in ranges:
                    continue  # address ranges handed out, never dialled
                assert ipaddress.ip_address(found).is_loopback, f"{name}: {value}"


def test_apiserver_serves_aggregated_apis_with_service_accounts_and_rbac() -> None:
    f = flags(cluster.apiserver_args(BIN, LAYOUT, PORTS))
    pki = LAYOUT.pki
    assert f["secure-port"] == "6443"
    assert f["bind-address"] == "127.0.0.1"
    assert f["etcd-servers"] == "http://127.0.0.1:2379"
    assert f["authorization-mode"] == "RBAC"
    assert f["service-cluster-ip-range"] == cluster.SERVICE_CIDR
    assert f["service-account-key-file"] == str(pki.sa_public_key)
    assert f["service-account-signing-key-file"] == str(pki.sa_private_key)
    assert f["service-account-issuer"].startswith("https://")
    assert f["proxy-client-cert-file"] == str(pki.front_proxy_client_cert)
    assert f["proxy-client-key-file"] == str(pki.front_proxy_client_key)
    assert f["requestheader-client-ca-file"] == str(pki.front_proxy_ca_cert)
    assert f["requestheader-allowed-names"] == "front-proxy-client"
    assert f["client-ca-file"] == str(pki.ca_cert)
    # As on OpenShift: the operator's RBAC must cover blockOwnerDeletion (its finalizers rule).
    assert f["enable-admission-plugins"] == "OwnerReferencesPermissionEnforcement"


def test_controller_manager_runs_a_fast_hpa_without_leader_election() -> None:
    f = flags(cluster.controller_manager_args(BIN, LAYOUT, PORTS))
    assert f["horizontal-pod-autoscaler-sync-period"] == "1s"
    assert f["leader-elect"] == "false"
    assert f["service-account-private-key-file"] == str(LAYOUT.pki.sa_private_key)
    assert f["root-ca-file"] == str(LAYOUT.pki.ca_cert)
    assert f["secure-port"] == "10257"


def test_scheduler_runs_without_leader_election() -> None:
    f = flags(cluster.scheduler_args(BIN, LAYOUT, PORTS))
    assert f["leader-elect"] == "false"
    assert f["secure-port"] == "10259"


def test_kwok_runs_no_server_and_manages_exactly_the_fake_nodes() -> None:
    f = flags(cluster.kwok_args(BIN, LAYOUT))
    assert f["server-address"] == ""
    assert f["node-port"] == "0"
    key, value = f["manage-nodes-with-annotation-selector"].split("=")
    node = cluster.fake_node("n1")
    assert node["metadata"]["annotations"][key] == value
    assert "taints" not in node["spec"]
    assert int(node["status"]["allocatable"]["cpu"]) >= 32


def test_kubeconfig_embeds_the_credentials_and_selects_its_context() -> None:
    config = cluster.render_kubeconfig(
        "https://127.0.0.1:6443", b"CA", b"CERT", b"KEY", user="admin"
    )
    parsed = yaml.safe_load(yaml.safe_dump(config))
    (ctx,) = parsed["contexts"]
    assert parsed["current-context"] == ctx["name"]
    (clu,) = parsed["clusters"]
    (usr,) = parsed["users"]
    assert ctx["context"] == {"cluster": clu["name"], "user": usr["name"]}
    assert clu["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(clu["cluster"]["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(usr["user"]["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(usr["user"]["client-key-data"]) == b"KEY"


def test_node_readiness_reads_the_ready_condition() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    not_ready = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert cluster.node_is_ready(ready)
    assert not cluster.node_is_ready(not_ready)
    assert not cluster.node_is_ready({})


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = cluster.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_apiservice_reaches_the_adapter_through_an_externalname_service_to_localhost() -> None:
    namespace, service, apiservice = metrics_adapter.apiservice_manifests(8443, b"CA")
    assert namespace["kind"] == "Namespace"
    assert service["spec"]["type"] == "ExternalName"
    assert service["spec"]["externalName"] == "localhost"
    assert [p["port"] for p in service["spec"]["ports"]] == [8443]
    ref = apiservice["spec"]["service"]
    assert (ref["namespace"], ref["name"], ref["port"]) == (
        service["metadata"]["namespace"],
        service["metadata"]["name"],
        8443,
    )
    assert apiservice["metadata"]["name"] == "v1beta2.custom.metrics.k8s.io"
    assert base64.b64decode(apiservice["spec"]["caBundle"]) == b"CA"
    assert "insecureSkipTLSVerify" not in apiservice["spec"]


@pytest.mark.parametrize(
    ("value", "expected"), [(25, "25"), (25.0, "25"), (2.5, "2500m"), (0.001, "1m"), (0, "0")]
)
def test_metric_values_become_quantities(value: float, expected: str) -> None:
    assert metrics_adapter.quantity(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_metric_values_are_refused(value: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        metrics_adapter.quantity(value)


def test_write_metric_url_stays_on_loopback_and_escapes_names() -> None:
    url = metrics_adapter.write_metric_url(9000, "ns", "pod/x", "conns")
    assert url == "http://127.0.0.1:9000/write-metrics/namespaces/ns/pods/pod%2Fx/conns"


def test_pki_signs_clients_and_a_loopback_serving_cert(tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path, "10.96.0.1")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "10.96.0.1"} <= ips
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    admin = x509.load_pem_x509_certificate(pki.client_cert("admin").read_bytes())
    admin.verify_directly_issued_by(ca)
    groups = [a.value for a in admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["system:masters"]
    assert pki.is_complete()
    assert {c.file_stem for c in CLIENTS} >= {"admin", "controller-manager", "scheduler", "kwok"}
    cert_path, _ = issue_serving_cert(pki, "adapter", ["svc.ns.svc"], ["127.0.0.1"])
    adapter = x509.load_pem_x509_certificate(cert_path.read_bytes())
    adapter.verify_directly_issued_by(ca)
    adapter_sans = adapter.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert adapter_sans.get_values_for_type(x509.DNSName) == ["svc.ns.svc"]
    # A second call keeps the existing PKI (certificates in running kubeconfigs stay valid).
    before = pki.ca_cert.read_bytes()
    ensure_pki(tmp_path, "10.96.0.1")
    assert pki.ca_cert.read_bytes() == before


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    # A parent that forks a child into its own process group, then both sleep.
    script = "import os, time\nos.fork()\ntime.sleep(60)\n"
    record = procs.start("sleeper", [sys.executable, "-c", script], tmp_path / "log")
    assert procs.is_running(record)
    deadline = time.monotonic() + 5
    while len(procs.group_members([record.pid])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(procs.group_members([record.pid])) == 2

    assert procs.stop([record], timeout=5) == []
    assert not procs.is_running(record)
    assert procs.group_members([record.pid]) == []


def test_a_reused_pid_running_another_binary_is_not_ours() -> None:
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            record = procs.ProcessRecord("etcd", other.pid, "/nonexistent/etcd", "/dev/null")
            assert not procs.is_running(record)
            assert procs.stop([record], timeout=1) == []
            assert other.poll() is None  # stop() left the stranger alone
        finally:
            other.kill()


@pytest.mark.parametrize(
    ("crd", "established"),
    [
        (None, False),
        ({}, False),
        ({"status": None}, False),
        ({"status": {"conditions": None}}, False),
        ({"status": {"conditions": [{"type": "Established", "status": "False"}]}}, False),
        ({"status": {"conditions": [{"type": "NamesAccepted", "status": "True"}]}}, False),
        ({"status": {"conditions": [{"type": "Established", "status": "True"}]}}, True),
    ],
)
def test_a_crd_is_established_only_by_its_condition(
    crd: dict[str, Any] | None, established: bool
) -> None:
    assert cluster.crd_established(crd) is established


def test_the_hostpath_provisioners_directory_goes_only_if_the_cluster_made_it(
    tmp_path: Path,
) -> None:
    """cluster.HOSTPATH_PV_DIR is a fixed host path: removed at `down` when the cluster's start
    found it absent and no PV of another cluster is left in it, else kept."""
    pv_dir = tmp_path / "hostpath_pv"
    pv_dir.mkdir()
    cluster.remove_made_dir(pv_dir, made_here=False)
    assert pv_dir.is_dir()  # it was there before this cluster
    (pv_dir / "pvc-of-another-cluster").mkdir()
    cluster.remove_made_dir(pv_dir, made_here=True)
    assert pv_dir.is_dir()  # still in use
    (pv_dir / "pvc-of-another-cluster").rmdir()
    cluster.remove_made_dir(pv_dir, made_here=True)
    assert not pv_dir.exists()
    cluster.remove_made_dir(pv_dir, made_here=True)  # gone already: nothing to do


def test_down_removes_only_the_directories_of_this_clusters_hostpath_pvs() -> None:
    base = Path("/tmp/hostpath_pv")
    pvs = {
        "items": [
            {"spec": {"hostPath": {"path": "/tmp/hostpath_pv/1d2da35c"}}},
            {"spec": {"hostPath": {"path": "/srv/data"}}},  # an admin's PV: not the provisioner's
            {"spec": {"hostPath": {"path": "/tmp/hostpath_pv/a/b"}}},
            {"spec": {"hostPath": {"path": "/tmp/hostpath_pv/.."}}},
            {"spec": {"local": {"path": "/tmp/hostpath_pv/x"}}},
            {"spec": {}},
        ]
    }
    assert cluster.provisioned_pv_dirs(pvs, base) == [base / "1d2da35c"]
    assert cluster.provisioned_pv_dirs({"items": None}, base) == []
