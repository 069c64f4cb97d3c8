"""Deployment files checked without Docker or a cluster: the kustomization rendered here and
every object validated against the Kubernetes schemas (kubernetes-validate), their
cross-references, the compose file, and the Dockerfile's stages, arguments and commands."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.settings import Settings, load_config
from tests.conftest import DEFAULT_MODEL_ID, ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONFIG_MOUNT = "/etc/minerva"
# What the renderer below understands; anything else in kustomization.yaml would be ignored.
KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions"}
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
SCHEMA_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())


# --- rendering -----------------------------------------------------------------------------


def render(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` for the subset used: resource files and file-based ConfigMaps."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZE_KEYS
    assert not unknown, f"the test's renderer does not implement {unknown}"
    objects = [
        doc
        for resource in kustomization["resources"]
        for doc in yaml.safe_load_all((directory / resource).read_text())
        if doc
    ]
    for generator in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in generator["files"]}
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    return objects


OBJECTS = render(K8S)


def find(kind: str, name: str) -> dict[str, Any]:
    (obj,) = (o for o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name)
    return obj


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def port_named(c: dict[str, Any], name: str) -> int:
    (port,) = (p["containerPort"] for p in c["ports"] if p["name"] == name)
    return int(port)


CORE = find("Deployment", "minerva-core")
BRIDGE = find("Deployment", "minerva-bridge")
HEADLESS = find("Service", "minerva-core-headless")
CONFIG = find("ConfigMap", "minerva-config")


def core_config(tmp_path: Path) -> tuple[dict[str, Any], Settings]:
    """minerva.toml from the ConfigMap, read by the core's own loader at its mount path."""
    path = tmp_path / "minerva.toml"
    path.write_text(CONFIG["data"]["minerva.toml"])
    fields = load_config(path)
    return fields, Settings(**fields)


# --- schemas -------------------------------------------------------------------------------


def test_the_kustomization_renders_every_kind() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in OBJECTS)
    assert kinds == [
        ("ConfigMap", "minerva-config"),
        ("Deployment", "minerva-bridge"),
        ("Deployment", "minerva-core"),
        ("PersistentVolumeClaim", "minerva-models"),
        ("Service", "minerva-bridge"),
        ("Service", "minerva-core-headless"),
    ]
    # Without name hashes the renderer needs no name rewriting (kustomize would add one).
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_objects_match_the_kubernetes_schemas(obj: dict[str, Any], version: str) -> None:
    # strict: unknown fields (a typo such as `readinesProbe`) fail too.
    kubernetes_validate.validate(obj, version, strict=True)


def test_the_validator_catches_mistakes() -> None:
    broken = json.loads(json.dumps(CORE))
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[-1], strict=True)


# --- cross-references ----------------------------------------------------------------------


def test_core_probes_use_grpc_health_on_the_cores_port(tmp_path: Path) -> None:
    c = container(CORE)
    _, settings = core_config(tmp_path)
    port = int(settings.listen.rpartition(":")[2])
    assert port_named(c, "grpc") == port == 50051
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": port}  # service "": the server's own status


def test_headless_service_selects_the_core_pods() -> None:
    spec = HEADLESS["spec"]
    assert spec["clusterIP"] == "None"
    labels = CORE["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"].items() <= labels.items()
    assert CORE["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (port,) = spec["ports"]
    assert port["port"] == port_named(container(CORE), port["targetPort"])


def test_the_bridge_reaches_every_core_through_the_headless_service() -> None:
    command = container(BRIDGE)["command"]
    host_port = f"{HEADLESS['metadata']['name']}:{HEADLESS['spec']['ports'][0]['port']}"
    assert flag(command, "--core") == f"dns:///{host_port}"
    assert flag(command, "--listen") == f"0.0.0.0:{port_named(container(BRIDGE), 'http')}"
    service = find("Service", "minerva-bridge")["spec"]
    assert service["selector"].items() <= BRIDGE["spec"]["template"]["metadata"]["labels"].items()
    assert service["ports"][0]["targetPort"] == "http"
    assert container(BRIDGE)["readinessProbe"]["httpGet"]["path"] == "/health"


def test_configmap_is_a_valid_core_config_for_the_mounts(tmp_path: Path) -> None:
    fields, settings = core_config(tmp_path)
    c = container(CORE)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in CORE["spec"]["template"]["spec"]["volumes"]}
    assert set(mounts) == set(volumes)
    assert flag(c["command"], "--config") == f"{CONFIG_MOUNT}/minerva.toml"
    assert mounts["config"]["mountPath"] == CONFIG_MOUNT
    assert volumes["config"]["configMap"]["name"] == CONFIG["metadata"]["name"]
    assert settings.models_dir == Path(mounts["models"]["mountPath"])
    assert mounts["models"]["readOnly"] is True
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert find("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert fields["allowed_roots"] == (settings.models_dir,)
    # Conversions go to a writable volume, since the models volume and the root are read-only.
    assert settings.import_cache_dir is not None
    assert settings.import_cache_dir.is_relative_to(mounts["import-cache"]["mountPath"])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert (
        settings.shutdown_grace_s
        < CORE["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )


@pytest.mark.parametrize("deployment", [CORE, BRIDGE], ids=["core", "bridge"])
def test_api_keys_come_from_one_secret(deployment: dict[str, Any]) -> None:
    c = container(deployment)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == "minerva-api-keys"
    key_file = flag(c["command"], "--api-key-file")
    assert Path(key_file).parent == Path(mounts["api-keys"])
    assert "--allow-unauthenticated" not in c["command"]
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == dockerfile_user()


def test_core_memory_is_sized_from_the_default_models_estimate(
    tmp_path: Path, default_model_path: Path
) -> None:
    """The request covers the core's own estimate (weights, KV pool, prompt cache, scores) for the
    default model under minerva.toml's settings, plus the process; the budget admits it."""
    from dataclasses import replace

    from core.engine_factory import EngineFactory
    from core.metadata.reader import read_header
    from core.registry import Registry

    _, settings = core_config(tmp_path)
    local = replace(settings, models_dir=default_model_path.parent, allowed_roots=())
    spec = Registry(local).get(DEFAULT_MODEL_ID)
    factory = EngineFactory(
        settings.default_context_size, settings.queue_size, settings.prompt_cache_mb * 2**20
    )
    estimate = factory.estimate_bytes(spec, read_header(spec.path, spec.format))
    assert round(estimate / 1e6) == 505  # the number explained in core.yaml's comment
    resources = container(CORE)["resources"]
    request, limit = (mebibytes(resources[k]["memory"]) for k in ("requests", "limits"))
    process = 250 * 10**6  # the interpreter, gRPC and llama.cpp's compute buffers
    budget = settings.memory_budget_mb * 2**20
    assert estimate <= budget
    assert estimate + process <= request * 2**20
    assert budget + process <= limit * 2**20
    assert int(resources["requests"]["cpu"]) == settings.threads


def mebibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, quantity
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


# --- compose -------------------------------------------------------------------------------


COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_and_kubernetes_run_the_same_image_and_scripts() -> None:
    services = COMPOSE["services"]
    images = {s["image"] for s in services.values()} | {
        container(d)["image"] for d in (CORE, BRIDGE)
    }
    assert len(images) == 1
    assert {s["build"]["context"] for s in services.values()} == {".."}
    assert (DEPLOY / ".." / "Dockerfile").is_file()
    for name, deployment in (("core", CORE), ("bridge", BRIDGE)):
        script = f"minerva-{name}"
        assert script in SCRIPTS
        assert services[name]["command"][0] == script
        assert container(deployment)["command"][0] == script


def test_compose_wires_the_bridge_to_the_core(tmp_path: Path) -> None:
    core, bridge = COMPOSE["services"]["core"], COMPOSE["services"]["bridge"]
    config_mount = f"{CONFIG_MOUNT}/minerva.toml"
    assert flag(core["command"], "--config") == config_mount
    assert f"./k8s/minerva.toml:{config_mount}:ro" in core["volumes"]
    assert (DEPLOY / "k8s" / "minerva.toml").is_file()
    _, settings = core_config(tmp_path)
    port = settings.listen.rpartition(":")[2]
    assert flag(bridge["command"], "--core") == f"core:{port}"
    assert any(v.endswith(f":{settings.models_dir}:ro") for v in core["volumes"])
    assert bridge["depends_on"]["core"]["condition"] == "service_healthy"
    # Off loopback inside the network: keys required, the bridge published on loopback only.
    for service in (core, bridge):
        assert service["environment"]["MINERVA_API_KEYS"].startswith("${MINERVA_API_KEYS:?")
    assert bridge["ports"] == ["127.0.0.1:8000:8000"]
    # The health check is Python run in the image: it must compile and ask the core's port.
    check = core["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    compile(check[3], "healthcheck", "exec")
    assert f"grpc.insecure_channel('127.0.0.1:{port}')" in check[3]


# --- Dockerfile ----------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_user() -> int:
    (user,) = (args for keyword, args in dockerfile() if keyword == "USER")
    return int(user)


def test_dockerfile_stages_and_build_arguments() -> None:
    steps = dockerfile()
    stages = [args.split() for keyword, args in steps if keyword == "FROM"]
    assert [s[1:] for s in stages] == [["AS", "builder"], ["AS", "runtime"]]
    assert [s[0] for s in stages] == ["${BUILDER_IMAGE}", "${RUNTIME_IMAGE}"]
    args = {a.split("=")[0] for keyword, a in steps if keyword == "ARG"}
    assert {"BUILDER_IMAGE", "RUNTIME_IMAGE", "CMAKE_ARGS", "GGML_CPU_ARGS"} <= args
    runs = [a for keyword, a in steps if keyword == "RUN"]
    # llama-cpp-python is compiled once, with CMAKE_ARGS, at pyproject.toml's pin.
    (pin,) = (
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("llama-cpp-python==")
    )
    (compile_step,) = (r for r in runs if pin in r)
    assert 'CMAKE_ARGS="${GGML_CPU_ARGS} ${CMAKE_ARGS}"' in compile_step
    assert "pip wheel" in compile_step
    # A portable image: llama.cpp must not be tuned to the build machine's CPU by default.
    (cpu_args,) = (a for keyword, a in steps if keyword == "ARG" and a.startswith("GGML_CPU"))
    assert "-DGGML_NATIVE=OFF" in cpu_args
    # The runtime installs only the builder's wheels, from no index.
    assert any("from=builder" in r and "--no-index" in r for r in runs)


def test_dockerfile_runs_the_console_scripts_as_a_non_root_user() -> None:
    steps = dockerfile()
    assert dockerfile_user() != 0
    (cmd,) = (json.loads(args) for keyword, args in steps if keyword == "CMD")
    assert cmd[0] in SCRIPTS and cmd[0] == "minerva-core"
    assert flag(cmd, "--listen") == "0.0.0.0:50051"
    assert flag(cmd, "--models-dir") == "/models"
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in steps)  # the command picks
    copies = [shlex.split(a) for keyword, a in steps if keyword == "COPY"]
    assert not any("models" in c[0] for c in copies)  # no model baked in


def test_dockerignore_keeps_the_context_small() -> None:
    rules = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert rules[0] == "*"  # everything out, then only what the builder copies
    copies = [shlex.split(a) for k, a in dockerfile() if k == "COPY"]
    copied = {source.rstrip("/") for c in copies for source in c[:-1]}
    allowed = {r.removeprefix("!").rstrip("/") for r in rules if r.startswith("!")}
    assert copied == allowed
    assert "**/*.gguf" in rules
