"""deploy/kubernetes renders, validates offline against the Kubernetes schemas, and is wired as
the README says: probes, one beat, per-role secrets, non-root read-only pods, KEDA on the queue.

There is no cluster here. `kubectl kustomize` renders (kubectl is a client; without it the
files are read and the few kustomize features this directory uses are applied by hand, and
when both are there they must agree). Every built-in kind is validated with the schemas
`kubernetes-validate` ships, strictly (an unknown field fails); KEDA's two kinds against the
schemas in keda_schema.py.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.keda_schema import SCHEMAS as KEDA_SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
NOT_APPLIED = {"secret.example.yaml"}
# The oldest Kubernetes the manifests promise to work on (README), and the newest schemas known.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
SECRET = "cardshare"

# The probe contract (README, "Kubernetes"). `--live` checks only this process's own progress,
# `--ready` that its dependencies answer.
EXEC_PROBES = {
    "worker": (["cardshare", "health", "--live"], ["cardshare", "health", "--ready"]),
    "beat": (["cardshare", "health", "--beat", "--live"], ["cardshare", "health", "--beat", "--ready"]),
}
HTTP_PROBES = {"webhooks": ("/healthz", "/readyz")}
# What each role may read from the Secret: nothing more.
SECRETS_BY_ROLE = {
    "worker": {"DATABASE_URL", "REDIS_URL", "LINQ_API_V3_API_KEY"},
    "beat": {"DATABASE_URL", "REDIS_URL"},
    "webhooks": {"DATABASE_URL", "REDIS_URL", "CARDSHARE_WEBHOOK_SECRETS"},
    "migrate": {"DATABASE_URL"},  # `db upgrade` needs no broker (tests/acceptance/test_db_cli.py)
}


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render_with_kubectl() -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _matches(doc: dict[str, Any], target: dict[str, str]) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    wanted = {"group": group, "version": version, "kind": doc["kind"], "name": doc["metadata"]["name"]}
    return all(wanted[k] == v for k, v in target.items())


def render_from_files() -> list[dict[str, Any]]:
    """The kustomize features this kustomization uses, and no others (anything else fails)."""
    k = yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())
    known = {
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "components",
        "configMapGenerator",
        "images",
    }
    assert set(k) <= known, f"render_from_files does not know {set(k) - known}"
    docs = [doc for name in k["resources"] for doc in load_all(KUSTOMIZE / name)]
    for comp_dir in (KUSTOMIZE / c for c in k.get("components", [])):
        comp = yaml.safe_load((comp_dir / "kustomization.yaml").read_text())
        assert set(comp) <= {"apiVersion", "kind", "resources", "patches"}
        docs += [doc for name in comp.get("resources", []) for doc in load_all(comp_dir / name)]
        for patch in comp.get("patches", []):
            for op in yaml.safe_load(patch["patch"]):
                assert op["op"] == "remove", op
                *parents, leaf = op["path"].strip("/").split("/")
                for doc in (d for d in docs if _matches(d, patch["target"])):
                    node = doc
                    for part in parents:
                        node = node[part]
                    del node[leaf]
    for gen in k.get("configMapGenerator", []):
        data = dict(line.split("=", 1) for line in gen["literals"])
        docs.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        )
    images = {img["name"]: img for img in k.get("images", [])}
    for doc in docs:
        meta = doc["metadata"]
        if doc["kind"] != "Namespace":
            meta["namespace"] = k["namespace"]
        for group in k.get("labels", []):
            meta.setdefault("labels", {}).update(group["pairs"])
        for container in containers(doc):
            img = images.get(container["image"])
            if img:
                container["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    return docs


def without_hashes(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """kubectl suffixes generated ConfigMap names with a content hash; compare without it."""
    text = re.sub(r"(cardshare-config)-[a-z0-9]{10}\b", r"\1", json.dumps(docs))
    return sorted(json.loads(text), key=lambda d: (d["kind"], d["metadata"]["name"]))


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return render_with_kubectl() if shutil.which("kubectl") else render_from_files()


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return None


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(doc)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def app_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The role's own containers (not the init containers that wait for the schema)."""
    spec = pod_spec(doc)
    return [] if spec is None else list(spec["containers"])


def init_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [] if spec is None else list(spec.get("initContainers", []))


def role(doc: dict[str, Any]) -> str:
    component: str = doc["metadata"]["labels"]["app.kubernetes.io/component"]
    return component


def workloads(manifests: list[dict[str, Any]], kind: str = "") -> dict[str, dict[str, Any]]:
    return {role(d): d for d in manifests if pod_spec(d) is not None and (not kind or d["kind"] == kind)}


def k8s_errors(doc: dict[str, Any], version: str) -> str | None:
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
    return None


def keda_errors(doc: dict[str, Any], version: str) -> str | None:
    try:
        jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
    except jsonschema.ValidationError as exc:
        return f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}"
    behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        # KEDA hands this to the HPA it creates: Kubernetes' own schema applies.
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
                "maxReplicas": 2,
                "behavior": behavior,
            },
        }
        return k8s_errors(hpa, version)
    return None


def errors(doc: dict[str, Any], version: str) -> str | None:
    if doc["apiVersion"].startswith("keda.sh/"):
        return keda_errors(doc, version)
    return k8s_errors(doc, version)


# --------------------------------------------------------------------------- rendering


def test_every_file_is_part_of_the_kustomization() -> None:
    files = {p.relative_to(KUSTOMIZE).as_posix() for p in KUSTOMIZE.rglob("*.yaml")}
    k = yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())
    used = {"kustomization.yaml", *k["resources"]}
    for comp in k.get("components", []):
        c = yaml.safe_load((KUSTOMIZE / comp / "kustomization.yaml").read_text())
        used |= {f"{comp}/kustomization.yaml", *(f"{comp}/{r}" for r in c["resources"])}
    assert files - used == NOT_APPLIED


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_reading_the_files_renders_what_kubectl_renders() -> None:
    assert without_hashes(render_from_files()) == without_hashes(render_with_kubectl())


def test_the_kinds_rendered(manifests: list[dict[str, Any]]) -> None:
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in manifests)
    assert next(k for k in kinds if k.startswith("ConfigMap/")).startswith("ConfigMap/cardshare-config")
    assert [k for k in kinds if not k.startswith("ConfigMap/")] == [
        "Deployment/cardshare-beat",
        "Deployment/cardshare-webhooks",
        "Deployment/cardshare-worker",
        "Job/cardshare-migrate",
        "Namespace/cardshare",
        "PodDisruptionBudget/cardshare-webhooks",
        "PodDisruptionBudget/cardshare-worker",
        "ScaledObject/cardshare-worker",
        "Service/cardshare-webhooks",
        "ServiceAccount/cardshare",
        "TriggerAuthentication/cardshare-redis",
    ]


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_offline(manifests: list[dict[str, Any]], version: str) -> None:
    problems = [e for e in (errors(doc, version) for doc in manifests) if e]
    assert not problems, "\n".join(problems)


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(doc)
    *parents, leaf = path.split(".")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is None:
        del node[leaf]
    else:
        node[leaf] = value
    return broken


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", "spec.template.spec.containers.0.livenessprobe", {}),  # a typo: unknown field
        ("Deployment", "spec.strategy.type", 1),
        ("Job", "spec.backoffLimit", "4"),
        ("PodDisruptionBudget", "spec.maxUnavailable", [1]),
        ("ScaledObject", "spec.triggers.0.metadata.listLength", 2000),  # KEDA wants strings
        ("ScaledObject", "spec.scaleTargetRef", None),
        ("ScaledObject", "spec.minReplicas", 1),
        # KEDA hands `behavior` to the HPA: Kubernetes' schema applies to it.
        (
            "ScaledObject",
            "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.policies.0.value",
            "1",
        ),
        ("TriggerAuthentication", "spec.secretTargetRef.0.key", None),
    ],
)
def test_the_validation_rejects_a_broken_manifest(
    manifests: list[dict[str, Any]], kind: str, path: str, value: Any
) -> None:
    doc = next(d for d in manifests if d["kind"] == kind)
    assert errors(doc, K8S_VERSIONS[0]) is None
    broken = _set(doc, path, value)
    assert errors(broken, K8S_VERSIONS[0]) is not None


# --------------------------------------------------------------------------- probes


def test_liveness_and_readiness_are_different_probes_on_every_long_running_container(
    manifests: list[dict[str, Any]],
) -> None:
    deployments = workloads(manifests, "Deployment")
    assert set(deployments) == {"worker", "beat", "webhooks"}
    for name, doc in deployments.items():
        for c in app_containers(doc):
            live, ready = c.get("livenessProbe"), c.get("readinessProbe")
            assert live, f"{name}/{c['name']} needs a liveness probe"
            assert ready, f"{name}/{c['name']} needs a readiness probe"
            assert live != ready, f"{name}/{c['name']}: liveness must not be the readiness check"
            # The startup probe holds liveness off while the process comes up, checking the same.
            startup = c["startupProbe"]
            assert {k: v for k, v in startup.items() if k in ("exec", "httpGet")} == {
                k: v for k, v in live.items() if k in ("exec", "httpGet")
            }
            for probe in (live, ready, startup):
                assert probe["timeoutSeconds"] < probe["periodSeconds"] or probe is startup
                if "exec" in probe:
                    assert probe["exec"]["command"][0] == "cardshare"


def test_the_probes_are_the_documented_commands_and_paths(manifests: list[dict[str, Any]]) -> None:
    deployments = workloads(manifests, "Deployment")
    for name, (live, ready) in EXEC_PROBES.items():
        (c,) = app_containers(deployments[name])
        assert c["livenessProbe"]["exec"]["command"] == live
        assert c["readinessProbe"]["exec"]["command"] == ready
    for name, (live_path, ready_path) in HTTP_PROBES.items():
        (c,) = app_containers(deployments[name])
        ports = {p["name"] for p in c["ports"]}
        assert c["livenessProbe"]["httpGet"] == {"path": live_path, "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": ready_path, "port": "http"}
        assert "http" in ports
    readme = (ROOT / "README.md").read_text()
    for live, ready in EXEC_PROBES.values():
        assert f"`{' '.join(live)}`" in readme
        assert f"`{' '.join(ready)}`" in readme
    for live_path, ready_path in HTTP_PROBES.values():
        assert f"`{live_path}`" in readme
        assert f"`{ready_path}`" in readme


def test_every_exec_probe_is_a_real_cardshare_health_command(manifests: list[dict[str, Any]]) -> None:
    """Each probe command parses as `cardshare health` does in the image (worker.entry sends it
    there without loading the CLI); tests/acceptance/test_probes.py runs them for real."""
    from worker.ops.healthcheck import health

    commands = [
        probe["exec"]["command"]
        for doc in workloads(manifests, "Deployment").values()
        for c in app_containers(doc)
        for probe in (c["startupProbe"], c["livenessProbe"], c["readinessProbe"])
        if "exec" in probe
    ]
    assert len(commands) == 6
    for argv in commands:
        assert argv[:2] == ["cardshare", "health"], argv
        ctx = health.make_context("cardshare health", list(argv[2:]))  # click.UsageError on a bad flag
        assert ctx.params["live"] or ctx.params["ready"], argv
    with pytest.raises(click.UsageError):
        health.make_context("cardshare health", ["--liveness"])


# --------------------------------------------------------------------------- roles


def test_each_role_runs_a_real_cardshare_command(manifests: list[dict[str, Any]]) -> None:
    from worker.cli.main import cli

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    expected = {"worker": "worker", "beat": "beat", "webhooks": "webhooks", "migrate": "db"}
    for name, doc in workloads(manifests).items():
        (c,) = app_containers(doc)
        assert c["args"][0] == expected[name]
        assert cli.get_command(click.Context(cli), c["args"][0]) is not None, name
        assert "command" not in c, f"{name}: the image's entrypoint is `cardshare`"
        assert c["image"].endswith(f"cardshare:{version}"), c["image"]
    assert workloads(manifests)["migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "db",
        "upgrade",
    ]


def test_long_running_pods_wait_for_the_schema_instead_of_crash_looping(
    manifests: list[dict[str, Any]],
) -> None:
    """Each Deployment's init container runs `cardshare db wait` (tests/acceptance/test_db_cli.py)
    and reads only the database URL."""
    from worker.cli.main import cli

    db = cli.get_command(click.Context(cli), "db")
    assert isinstance(db, click.Group)
    wait = db.get_command(click.Context(db), "wait")
    assert wait is not None
    for name, doc in workloads(manifests, "Deployment").items():
        (init,) = init_containers(doc)
        assert init["args"][:2] == ["db", "wait"], name
        wait.make_context("cardshare db wait", list(init["args"][2:]))  # a bad flag: UsageError
        (app,) = app_containers(doc)
        assert init["image"] == app["image"]
        refs = {e["valueFrom"]["secretKeyRef"]["key"] for e in init["env"] if "valueFrom" in e}
        assert refs == {"DATABASE_URL"}, name
    assert not init_containers(workloads(manifests, "Job")["migrate"])


def test_exactly_one_beat_and_scalable_workers(manifests: list[dict[str, Any]]) -> None:
    deployments = workloads(manifests, "Deployment")
    beat = deployments["beat"]["spec"]
    assert beat["replicas"] == 1
    assert beat["strategy"] == {"type": "Recreate"}
    # KEDA's HPA owns the worker count: a `replicas` here would reset it on every apply.
    assert "replicas" not in deployments["worker"]["spec"]
    assert deployments["worker"]["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # A warm shutdown finishes in-flight shares within the task hard limit.
    from worker.config import Settings

    grace = deployments["worker"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings().task_time_limit_s
    # The soft shutdown hands running shares back after CARDSHARE_SHUTDOWN_TIMEOUT; their threads
    # then wait at most one Linq call: all of it before Kubernetes' SIGKILL.
    s = Settings()
    assert grace > s.shutdown_timeout_s + s.http_connect_timeout_s + s.http_read_timeout_s
    job = workloads(manifests, "Job")["migrate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_disruption_budgets_and_the_service_select_real_pods(manifests: list[dict[str, Any]]) -> None:
    deployments = workloads(manifests, "Deployment")

    def selected(selector: dict[str, str]) -> set[str]:
        return {
            name
            for name, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        }

    pdbs = {d["metadata"]["name"]: d["spec"] for d in manifests if d["kind"] == "PodDisruptionBudget"}
    assert selected(pdbs["cardshare-worker"]["selector"]["matchLabels"]) == {"worker"}
    assert pdbs["cardshare-worker"]["maxUnavailable"] == 1
    assert selected(pdbs["cardshare-webhooks"]["selector"]["matchLabels"]) == {"webhooks"}
    for name, d in deployments.items():
        assert selected(d["spec"]["selector"]["matchLabels"]) == {name}
    (service,) = (d for d in manifests if d["kind"] == "Service")
    assert selected(service["spec"]["selector"]) == {"webhooks"}
    (c,) = app_containers(deployments["webhooks"])
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in c["ports"]}


# --------------------------------------------------------------------------- secrets and config


def test_each_role_reads_only_its_own_secrets(manifests: list[dict[str, Any]]) -> None:
    example = load_all(KUSTOMIZE / "secret.example.yaml")[0]
    assert example["metadata"]["name"] == SECRET
    keys = set(example["stringData"])
    assert not any(d["kind"] == "Secret" for d in manifests), "secrets are created outside the repository"
    for name, doc in workloads(manifests).items():
        (c,) = app_containers(doc)
        refs = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        assert {r["name"] for r in refs} == {SECRET}
        assert {r["key"] for r in refs} == SECRETS_BY_ROLE[name], name
        assert {r["key"] for r in refs} <= keys
        # Nothing secret in plain values, nor in an envFrom Secret that would hand over every key.
        assert not {e["name"] for e in c["env"] if "value" in e} & keys, name
        assert all("secretRef" not in src for src in c.get("envFrom", [])), name


def test_the_config_map_holds_real_settings_and_no_secrets(manifests: list[dict[str, Any]]) -> None:
    from worker.config import ENV_NAMES

    (config,) = (d for d in manifests if d["kind"] == "ConfigMap")
    assert set(config["data"]) <= set(ENV_NAMES)
    assert not set(config["data"]) & set().union(*SECRETS_BY_ROLE.values())
    for doc in workloads(manifests).values():
        for c in containers(doc):
            assert c["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
            assert {e["name"] for e in c["env"]} <= set(ENV_NAMES)


# --------------------------------------------------------------------------- pods


def test_pods_run_as_non_root_on_a_read_only_root_filesystem(manifests: list[dict[str, Any]]) -> None:
    (namespace,) = (d for d in manifests if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (account,) = (d for d in manifests if d["kind"] == "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    for name, doc in workloads(manifests).items():
        spec = pod_spec(doc)
        assert spec is not None
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in spec["volumes"]}
        for c in containers(doc):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            # The one writable place (CARDSHARE_DATA_DIR, beat's schedule, temp files) is /tmp.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def _quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return float(text.removesuffix(suffix)) * factor
    return float(text)


def test_every_container_has_requests_and_limits(manifests: list[dict[str, Any]]) -> None:
    for name, doc in workloads(manifests).items():
        for c in containers(doc):
            res = c["resources"]
            for key in ("cpu", "memory"):
                assert _quantity(res["requests"][key]) <= _quantity(res["limits"][key]), (name, key)


# --------------------------------------------------------------------------- KEDA


def test_keda_scales_workers_on_the_share_queue(manifests: list[dict[str, Any]]) -> None:
    from worker.celery_app import app

    (scaled,) = (d for d in manifests if d["kind"] == "ScaledObject")
    auths = {d["metadata"]["name"]: d for d in manifests if d["kind"] == "TriggerAuthentication"}
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == workloads(manifests, "Deployment")["worker"]["metadata"]["name"]
    # Workers also consume the control queue (sweep, recovery): never scale to zero.
    assert spec["minReplicaCount"] >= 1
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == app.conf.task_default_queue == "cardshare"
    assert int(meta["listLength"]) > 0
    # The address and password come from the Secret, never from the manifest.
    auth = auths[trigger["authenticationRef"]["name"]]["spec"]["secretTargetRef"]
    assert {r["parameter"] for r in auth} == {"address", "password"}
    assert not {"address", "host", "password"} & set(meta)
    keys = set(load_all(KUSTOMIZE / "secret.example.yaml")[0]["stringData"])
    assert all(r["name"] == SECRET and r["key"] in keys for r in auth)
