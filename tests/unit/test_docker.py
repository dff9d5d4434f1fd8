"""Deployment files, checked without a Docker engine: `docker compose config` validates and
resolves docker-compose.yml; the Dockerfile's steps that need no engine are run here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"LABEL_STUDIO_API_KEY": "0123456789abcdef0123456789abcdef01234567",
           "POSTGRES_PASSWORD": "pg-secret", "LABEL_STUDIO_USERNAME": "admin@example.com",
           "LABEL_STUDIO_PASSWORD": "ls-secret"}
SERVICES = {"postgres", "label-studio", "redis", "backend", "worker"}
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _compose() -> list[str]:
    if shutil.which("docker") is None:
        pytest.skip("no docker client")
    if subprocess.run(["docker", "compose", "version"], capture_output=True,
                      check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("docker has no compose plugin and docker-compose is missing: "
                "run `make system-deps`", pytrace=False)


def _config(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config"],
                          cwd=ROOT, env=clean | env, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    done = _config(SECRETS)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _volumes(service: dict) -> dict[str, str]:
    """target -> source of a service's mounts, in either output format of `config`."""
    out = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol.get("source", ""), vol["target"]
        out[target] = source
    return out


def test_the_stack_has_its_services_and_named_volumes(services):
    assert SERVICES <= set(services)
    ls = services["label-studio"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    assert services["postgres"]["image"] == "postgres:16"
    assert _volumes(services["postgres"])["/var/lib/postgresql/data"] == "postgres"
    assert _volumes(ls)["/label-studio/data"] == "label-studio"
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert _volumes(redis)["/data"] == "redis"


def test_label_studio_uses_postgres_and_may_call_a_backend_on_the_private_network(services):
    env = _env(services["label-studio"])
    assert env["DJANGO_DB"] == "default"
    assert (env["POSTGRE_HOST"], env["POSTGRE_PORT"]) == ("postgres", "5432")
    assert env["POSTGRE_PASSWORD"] == _env(services["postgres"])["POSTGRES_PASSWORD"] == "pg-secret"
    assert env["POSTGRE_USER"] == _env(services["postgres"])["POSTGRES_USER"]
    assert env["POSTGRE_NAME"] == _env(services["postgres"])["POSTGRES_DB"]
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    # The admin's token is the key the backend uses, valid from the first start.
    assert env["LABEL_STUDIO_USER_TOKEN"] == SECRETS["LABEL_STUDIO_API_KEY"]
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"


def test_server_and_workers_share_redis_the_model_volume_and_label_studio(services):
    ls_env = _env(services["label-studio"])
    for name in ("backend", "worker"):
        env = _env(services[name])
        assert env["REDIS_URL"].startswith("redis://redis:")
        assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        assert env["LABEL_STUDIO_API_KEY"] == SECRETS["LABEL_STUDIO_API_KEY"]
        assert _volumes(services[name])[env["MODEL_DIR"]] == "models"
        # Files import-images serves in place must have the same path in Label Studio.
        root = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
        assert root == ls_env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]
        assert _volumes(services[name])[root] == _volumes(services["label-studio"])[root]
    assert services["worker"]["command"] == ["worker"]
    assert _env(services["backend"])["BACKEND_URL"] == "http://backend:9090"


def test_workers_scale_they_have_no_fixed_name_or_host_port(services):
    worker = services["worker"]
    assert "container_name" not in worker and not worker.get("ports")
    assert all("container_name" not in s for s in services.values())


def test_health_checks_gate_the_start_order(services):
    for name in ("postgres", "label-studio", "redis", "worker"):
        assert services[name].get("healthcheck", {}).get("test"), name
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert rule["condition"] == "service_healthy", (name, dependency)
            assert services[dependency].get("healthcheck") or dependency == "backend"
    assert set(services["worker"]["depends_on"]) == {"redis", "label-studio"}
    assert "postgres" in services["label-studio"]["depends_on"]


def test_a_missing_secret_stops_compose_with_its_name():
    done = _config({k: v for k, v in SECRETS.items() if k != "POSTGRES_PASSWORD"})
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


# -- the Dockerfile ---------------------------------------------------------------------------
def _instruction(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.*)$", DOCKERFILE, re.MULTILINE)


def test_the_image_is_slim_non_root_with_a_health_check_and_the_cli_as_entrypoint():
    # The base is a build argument (a registry mirror, or a base built from Debian's packages).
    assert _instruction("FROM") == ["${BASE_IMAGE}"]
    assert DOCKERFILE.index("ARG BASE_IMAGE=python:3.11-slim-bookworm") < DOCKERFILE.index("FROM")
    assert _instruction("USER") and _instruction("USER")[-1] not in ("root", "0")
    assert "/health" in _instruction("HEALTHCHECK")[0] + DOCKERFILE.split("HEALTHCHECK")[1]
    assert _instruction("ENTRYPOINT") == ['["python", "-m", "ml_backend"]']
    assert _instruction("CMD")[-1] == '["serve"]'
    assert "ARG TORCH_VARIANT=cpu" in DOCKERFILE
    assert DOCKERFILE.count("--require-hashes") == 2


def _cpu_requirements() -> str:
    """Run the Dockerfile's own awk filter (continuations joined as Docker does)."""
    joined = DOCKERFILE.replace("\\\n", "")
    (program,) = re.findall(r"awk '([^']*)' requirements\.txt", joined)
    return subprocess.run(["awk", program, str(ROOT / "requirements.txt")], capture_output=True,
                          text=True, check=True).stdout


def test_the_cpu_variant_installs_everything_but_the_cuda_chain_by_hash():
    locked = (ROOT / "requirements.txt").read_text()
    kept = _cpu_requirements()
    pin = re.compile(r"^([A-Za-z0-9_.-]+)==", re.MULTILINE)
    gone = set(pin.findall(locked)) - set(pin.findall(kept))
    assert {"torch", "torchvision"} <= gone
    assert all(re.match(r"(torch|torchvision|triton|nvidia-.*|cuda-.*)$", n) for n in gone), gone
    assert kept.count("--hash=sha256:") > 0
    for name in pin.findall(kept):  # every remaining pin still carries its hashes
        block = kept.split(f"\n{name}==", 1)[-1].split("\n", 1)[1]
        assert block.lstrip().startswith("--hash=sha256:"), name
    # The CPU index gets the same versions as the lock.
    for name in ("torch", "torchvision"):
        expr = re.search(rf"sed -n '(s/\^{name}==[^']*)'", DOCKERFILE).group(1)
        version = subprocess.run(["sed", "-n", expr, str(ROOT / "requirements.txt")],
                                 capture_output=True, text=True, check=True).stdout.strip()
        assert re.search(rf"^{name}=={re.escape(version)} ", locked, re.MULTILINE), (name, version)


def test_what_the_image_copies_is_enough_to_run_the_cli(tmp_path):
    copied = re.findall(r"^COPY (?:--chown=\S+ )?(\S+) \./\S*$", DOCKERFILE, re.MULTILINE)
    assert {"ml_backend", "model", "sampling"} <= set(copied)
    app = tmp_path / "app"
    app.mkdir()
    for name in copied:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, app / name)
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignore and {f"!{n}" for n in copied} <= {i.rstrip("/") for i in ignore}
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(app), "HOME": str(tmp_path)}
    code = ("import ml_backend.server, ml_backend.jobs, ml_backend.importer\n"
            "from ml_backend.__main__ import main\nmain(['--help'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=app, env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0 and "import-images" in done.stdout, done.stderr


# -- .env.example and the host-network override -------------------------------------------------
HOST_OVERRIDE = ROOT / "docker-compose.host.yml"


def _example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_env_example_names_every_variable_compose_reads_and_no_other():
    read = set()
    for path in (ROOT / "docker-compose.yml", HOST_OVERRIDE):
        read |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    assert read == set(_example()), (read ^ set(_example()))


def test_a_copied_env_example_starts_nothing_until_its_secrets_are_set(tmp_path):
    example = _example()
    assert all(not example[k] for k in SECRETS if k != "LABEL_STUDIO_USERNAME")
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text())
    done = subprocess.run([*_compose(), "--env-file", str(env_file), "-f",
                           str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k not in SECRETS},
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert any(k in done.stderr for k in ("LABEL_STUDIO_API_KEY", "POSTGRES_PASSWORD")), done.stderr


def test_the_host_override_puts_every_service_on_the_host_network_with_local_images():
    done = subprocess.run([*_compose(), "-f", str(ROOT / "docker-compose.yml"), "-f",
                           str(HOST_OVERRIDE), "config"], cwd=ROOT,
                          env={k: v for k, v in os.environ.items() if k not in SECRETS} | SECRETS,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    services = {n: s for n, s in config["services"].items() if not s.get("profiles")}
    assert set(services) == SERVICES
    assert all(s.get("network_mode") == "host" for s in services.values())
    assert not config.get("networks")  # no bridge network, no private addresses
    for name in ("postgres", "redis", "label-studio"):
        assert services[name]["build"]["context"].endswith("tools/docker"), name
        assert services[name]["image"].endswith(":local"), name
    ports = {n: _env(s).get("PORT") for n, s in services.items()}
    backend_port = services["backend"]["command"][-1]
    assert ports["backend"] == ports["worker"] == backend_port  # the HEALTHCHECK's port
    assert _env(services["worker"])["REDIS_URL"].startswith("redis://127.0.0.1:")
