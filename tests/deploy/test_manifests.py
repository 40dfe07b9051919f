"""The Kubernetes manifests (deploy/k8s, issue #13 §2): every overlay rendered with kubectl's
built-in kustomize, validated offline against Kubernetes' schemas (kubernetes-validate --strict,
its schemas bundled), and held to the properties a hardened deployment needs. Outside CI a
machine without kubectl skips with the reason; under CI=true it fails."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pdvault_client.cli.environment import CLIENT_VARIABLES
from tests.conftest import IN_CI, ROOT, Transit, hcl_policy
from vault import config
from vault.app import transit_settings
from vault.config import load_settings
from vault.domain.context import RequestContext
from vault.kms.transit import VaultTransitKeyProvider

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = {
    "dev": K8S / "dev",
    "production": K8S / "production",
    "migrate": K8S / "production" / "migrate",
}
# The oldest Kubernetes with gRPC probes generally available (KEP-2727, 1.27), and the newest
# whose schemas kubernetes-validate bundles.
VERSIONS = ("1.27.0", None)
SERVING = ["dev", "production"]  # the overlays with a Deployment (migrate is a Job)
HEALTH_PORT = 8081
API_PORT = 50051
METRICS_PORT = 9464
UID = 10001
WRITABLE = ("/tmp", "/var/lib/pdvault")  # noqa: S108 - paths inside the pod, not here
SECRET_VARIABLES = {"PDV_DATABASE_URL", "VAULT_TOKEN", "VAULT_SECRET_ID", "PDV_API_KEY"}
Doc = dict[str, Any]


@functools.cache
def _rendered(path: Path) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        reason = (
            "kubectl (with its built-in kustomize) is not installed: the manifests are not rendered"
        )
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    done = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(overlay: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(_rendered(OVERLAYS[overlay])) if d]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [d["kind"] for d in docs])
    return found[0]


def workloads(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] in {"Deployment", "Job"}]


def env_of(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env", [])}


def value(container: Doc, name: str) -> str:
    found: str = env_of(container)[name]["value"]
    return found


@pytest.fixture(params=list(OVERLAYS))
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


# -- rendering and schema validation ------------------------------------------------------------


def _validate(path: Path, version: str | None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet"]
    if version:
        argv += ["--kubernetes-version", version]
    return subprocess.run(
        [*argv, str(path)], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize("version", VERSIONS, ids=["1.27", "latest"])
def test_every_overlay_renders_and_validates_offline(
    overlay: str, version: str | None, tmp_path: Path
) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(_rendered(OVERLAYS[overlay]))
    checked = _validate(rendered, version)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ERROR" not in checked.stdout + checked.stderr


def test_the_validation_catches_a_misspelt_field(tmp_path: Path) -> None:
    broken = _rendered(OVERLAYS["production"]).replace("runAsNonRoot:", "runAsNonRot:", 1)
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    checked = _validate(path, None)
    assert checked.returncode != 0
    assert "runAsNonRot" in checked.stdout + checked.stderr


# -- the pods ----------------------------------------------------------------------------------


def test_every_pod_runs_hardened(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        assert pod["securityContext"] == pod["securityContext"] | {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for container in pod["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "privileged": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert set(resources[kind]) == {"cpu", "memory"}, (workload["kind"], kind)
            image = container["image"]
            assert re.fullmatch(r"[\w./-]+/pdvault:\d+\.\d+\.\d+", image), image  # tagged
            # Writable: the data volume and /tmp only (the root file system is read-only).
            mounts = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
            assert set(WRITABLE) <= mounts
            assert all(m.startswith(WRITABLE) for m in mounts), mounts


def test_the_image_runs_as_the_user_the_manifests_name() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.findall(r"^USER (.+)$", dockerfile, re.M) == [f"{UID}:{UID}"]
    assert f"--uid {UID}" in dockerfile
    assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == ["debian:bookworm-slim"] * 2
    assert 'ENTRYPOINT ["pdv"]' in dockerfile
    assert 'CMD ["serve"]' in dockerfile
    assert f"PDV_HEALTH_ADDR=0.0.0.0:{HEALTH_PORT}" in dockerfile
    assert "PDV_LOG_FORMAT=json" in dockerfile  # a collector reads it, not a terminal
    final = "\n".join(
        line for line in dockerfile.rsplit("\nFROM ", 1)[1].splitlines() if not line.startswith("#")
    )
    [packages] = re.findall(r"apt-get install -y --no-install-recommends ([^\\\n]+)", final)
    assert packages.split() == ["python3"]  # no python3-venv, pip or compiler
    assert not re.search(r"\b(gcc|g\+\+|build-essential|make|pip install)\b", final)


@pytest.mark.parametrize("overlay", SERVING)
def test_probes_use_the_health_port_liveness_and_readiness(overlay: str) -> None:
    deployment = one(render(overlay), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": API_PORT, "health": HEALTH_PORT, "metrics": METRICS_PORT}
    assert value(container, "PDV_HEALTH_ADDR") == f"0.0.0.0:{HEALTH_PORT}"
    assert value(container, "PDV_METRICS_ADDR") == f"0.0.0.0:{METRICS_PORT}"
    assert value(container, "PDV_LOG_FORMAT") == "json"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": HEALTH_PORT, "service": "liveness"}
    assert container["readinessProbe"]["grpc"] == {"port": HEALTH_PORT, "service": ""}
    # The shutdown fits in the pod's grace period: pause, drain, and time to close.
    pause = float(value(container, "PDV_SHUTDOWN_PAUSE"))
    grace = float(value(container, "PDV_SHUTDOWN_GRACE"))
    assert pause > 0
    assert pause + grace + 5 <= pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize("overlay", SERVING)
def test_one_cpu_per_pod_and_one_process_per_cpu(overlay: str) -> None:
    [container] = one(render(overlay), "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["cpu"] == "1"
    assert container["resources"]["requests"]["cpu"] == "1"
    assert env_of(container)["PDV_PROCESSES"]["valueFrom"] == {
        "resourceFieldRef": {"containerName": "pdvault", "resource": "limits.cpu", "divisor": "1"}
    }


def test_every_variable_the_manifests_set_is_one_pdvault_reads(overlay: str) -> None:
    known = set(config.defaults()) | {v.name for v in CLIENT_VARIABLES}
    for workload in workloads(render(overlay)):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert set(env_of(container)) <= known, set(env_of(container)) - known


# -- secrets -----------------------------------------------------------------------------------


def test_no_secret_value_is_in_the_manifests(overlay: str) -> None:
    docs = render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"]
    for workload in workloads(docs):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert not SECRET_VARIABLES & set(env_of(container)), "set it with NAME_FILE"
            assert not [
                e for e in env_of(container).values() if "secretKeyRef" in e.get("valueFrom", {})
            ]
    text = _rendered(OVERLAYS[overlay])
    assert not re.search(r"postgres(ql)?(\+psycopg)?://\S*:\S*@", text)  # no password in a URL
    assert "hvs." not in text
    assert "pdv_" not in text.replace("pdvault", "")


def test_secrets_are_files_of_mounted_secrets_readable_by_the_owner_only() -> None:
    """Production: the database URL through PDV_DATABASE_URL_FILE, TLS and the Vault token as
    files, every one from a Secret (or a projected token) mounted with defaultMode 0400."""
    for overlay in ("production", "migrate"):
        for workload in workloads(render(overlay)):
            pod = workload["spec"]["template"]["spec"]
            [container] = pod["containers"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            files = [
                value(container, name)
                for name in env_of(container)
                if name.endswith("_FILE") or name in {"PDV_TLS_CERT", "PDV_TLS_KEY"}
            ]
            assert value(container, "PDV_DATABASE_URL_FILE") in files
            for path in files:
                [mount] = [m for p, m in mounts.items() if path.startswith(p + "/")]
                assert mount.get("readOnly") is True, path
                volume = volumes[mount["name"]]
                source = volume.get("secret") or volume.get("projected")
                assert source is not None, (path, volume)
                assert source["defaultMode"] == 0o400, path


def test_production_runs_on_postgresql_and_vault_with_kubernetes_auth() -> None:
    docs = render("production")
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {name: e.get("value") for name, e in env_of(container).items()}
    assert env["PDV_KMS"] == "vault"
    assert env["PDV_VAULT_AUTH"] == "kubernetes"
    assert env["PDV_AUTO_MIGRATE"] == "false"  # the Job migrates, before the rollout
    assert env["PDV_DEV_CREDENTIALS"] == "false"
    assert env["PDV_ADDR"] == f"0.0.0.0:{API_PORT}"
    assert env["PDV_TLS_CERT"]
    assert env["PDV_TLS_KEY"]
    assert "PDV_ALLOW_INSECURE" not in env
    account = one(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    [token] = [
        s["serviceAccountToken"]
        for v in pod["volumes"]
        for s in v.get("projected", {}).get("sources", [])
        if "serviceAccountToken" in s
    ]
    assert token["audience"] == "vault"
    assert value(container, "PDV_VAULT_K8S_JWT_FILE").endswith("/" + token["path"])
    job = one(render("migrate"), "Job")
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    assert migrate["image"] == container["image"]


def test_the_production_settings_are_valid_and_log_in_to_vault(
    tmp_path: Path, transit: Transit
) -> None:
    """The production container's environment, files put where it says, read by Settings;
    then a Transit call with its Kubernetes login, through the emulator, with the role and
    service account that deploy/vault/bootstrap.sh and the manifests name."""
    docs = render("production")
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for name, entry in env_of(container).items():
        env[name] = entry.get("value", "1")  # PDV_PROCESSES comes from the CPU limit: 1
    url = tmp_path / "url"
    url.write_text("postgresql+psycopg://pdvault@db.example:5432/pdvault\n")
    jwt = tmp_path / "token"
    jwt.write_text("eyJhbGciOi.k8s.jwt\n")
    env |= {
        "PDV_DATABASE_URL_FILE": str(url),
        "PDV_VAULT_K8S_JWT_FILE": str(jwt),
        "VAULT_ADDR": transit.url,
        "VAULT_CACERT": "",
    }
    settings = load_settings(env)
    assert settings.effective_processes == 1
    assert settings.database_url.startswith("postgresql+psycopg://")
    role = _bootstrap_role()
    namespace = one(docs, "Deployment")["metadata"]["namespace"]
    assert (role["name"], role["namespace"]) == (settings.vault_k8s_role, namespace)
    assert role["service_account"] == one(docs, "ServiceAccount")["metadata"]["name"]
    transit.emulator.add_kubernetes_role(
        role["name"],
        "eyJhbGciOi.k8s.jwt",
        hcl_policy("pdvault-service.hcl"),
        service_account=role["service_account"],
        namespace=role["namespace"],
    )
    provider = VaultTransitKeyProvider(transit_settings(settings))
    status = provider.status(RequestContext.system("test"))
    assert status.latest_version == 1


def _bootstrap_role() -> dict[str, str]:
    """The Kubernetes auth role deploy/vault/bootstrap.sh writes (its default name)."""
    script = (ROOT / "deploy" / "vault" / "bootstrap.sh").read_text()
    [command] = re.findall(r'^vault write "auth/kubernetes/role/.*?[^\\]\n', script, re.M | re.S)
    words = command.replace("\\\n", " ").replace('"', "").split()
    role = words[2].removeprefix("auth/kubernetes/role/")
    [default] = re.findall(r'^k8s_role="\$\{PDV_VAULT_K8S_ROLE:-(\w+)\}"$', script, re.M)
    fields = dict(w.split("=", 1) for w in words[3:])
    return {
        "name": default if role == "$k8s_role" else role,
        "service_account": fields["bound_service_account_names"],
        "namespace": fields["bound_service_account_namespaces"],
        "audience": fields["audience"],
        "policies": fields["token_policies"],
    }


def test_bootstrap_makes_the_role_the_manifests_use() -> None:
    role = _bootstrap_role()
    assert role == {
        "name": "pdvault",
        "service_account": "pdvault",
        "namespace": "pdvault",
        "audience": "vault",
        "policies": "pdvault-service",
    }


# -- availability and the network ----------------------------------------------------------------


@pytest.mark.parametrize("overlay", SERVING)
def test_disruption_budget_and_autoscaler(overlay: str) -> None:
    docs = render(overlay)
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    autoscalers = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    if overlay == "dev":
        # One pod owns SQLite on a ReadWriteOnce volume: no second one, not even in a rollout.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        assert autoscalers == []
        return
    [hpa] = autoscalers
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in deployment["spec"]  # the autoscaler's to set
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


EGRESS = {"dev": {53}, "production": {53, 5432, 8200}, "migrate": {53, 5432}}


def test_network_policy_lets_in_the_api_and_metrics_ports_and_out_dns_postgresql_vault(
    overlay: str,
) -> None:
    docs = render(overlay)
    for workload in workloads(docs):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        [policy] = [
            d
            for d in docs
            if d["kind"] == "NetworkPolicy"
            and d["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        spec = policy["spec"]
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        ingress = [p for rule in spec["ingress"] for p in rule["ports"]]
        if workload["kind"] == "Deployment":
            assert ingress == [
                {"protocol": "TCP", "port": API_PORT},
                {"protocol": "TCP", "port": METRICS_PORT},
            ]
            assert all(set(rule) == {"ports"} or "from" in rule for rule in spec["ingress"])
            [scrape] = [r for r in spec["ingress"] if r["ports"][0]["port"] == METRICS_PORT]
            assert scrape["from"], "metrics are scraped from the monitoring namespace only"
        else:
            assert ingress == []
        ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
        assert ports == EGRESS[overlay]
        assert all(rule.get("ports") for rule in spec["egress"])  # never "anything, anywhere"
        [dns] = [r for r in spec["egress"] if {p["port"] for p in r["ports"]} == {53}]
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}


def test_the_service_exposes_the_api_port_only(overlay: str) -> None:
    docs = render(overlay)
    services = [d for d in docs if d["kind"] == "Service"]
    if overlay != "production":
        # dev: the API is on the pod's loopback (kubectl port-forward reaches it); the Job: none.
        assert services == []
        return
    [service] = services
    assert service["spec"]["ports"] == [
        {"name": "grpc", "port": API_PORT, "targetPort": "grpc", "protocol": "TCP"}
    ]
