"""deploy/docker-compose.yml: validated by `docker compose config` when the compose
plugin is here, and always checked structurally (etcd, three brokers, the price
producer and two price-alert consumers, health checks)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy import mini_yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
BROKERS = ("broker-1", "broker-2", "broker-3")
ALERTS = ("price-alert-1", "price-alert-2")
SERVICES = {"etcd", *BROKERS, "price-producer", *ALERTS}


def _compose_plugin() -> str | None:
    """Why `docker compose` cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`docker compose version` failed: {exc}"
    if probe.returncode != 0:
        said = (probe.stderr or probe.stdout).strip().splitlines()
        return f"docker client has no compose plugin ({said[0] if said else probe.returncode})"
    return None


@pytest.fixture(scope="module")
def compose() -> dict:
    """The compose file read with the strict subset reader."""
    data = mini_yaml.loads(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping"
    return {k: str(v) for k, v in env.items()}


def test_docker_compose_config_validates() -> None:
    """`docker compose config` accepts the file (needs the client, not an engine)."""
    missing = _compose_plugin()
    if missing:
        pytest.skip(missing)
    run = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    config = json.loads(run.stdout)
    assert set(config["services"]) == SERVICES
    ids = {config["services"][b]["environment"]["COMET_BROKER_ID"] for b in BROKERS}
    assert ids == set(BROKERS)
    for name in BROKERS:
        assert Path(config["services"][name]["build"]["context"]).resolve() == ROOT


def test_services(compose: dict) -> None:
    """etcd, three brokers, one producer and two alert consumers, nothing else."""
    assert set(compose["services"]) == SERVICES


def test_etcd_single_node_with_pinned_image(compose: dict) -> None:
    """A pinned etcd image, single-node flags, a health check and a named volume."""
    etcd = compose["services"]["etcd"]
    image = etcd["image"]
    assert re.fullmatch(r"(quay\.io/coreos/etcd:v|bitnami/etcd:)\d+\.\d+\.\d+", image), image
    flags = " ".join(etcd["command"])
    assert "--listen-client-urls=http://0.0.0.0:2379" in flags
    assert "--advertise-client-urls=http://etcd:2379" in flags
    assert "--initial-cluster=etcd=http://etcd:2380" in flags
    assert "etcdctl" in " ".join(etcd["healthcheck"]["test"])
    volume = etcd["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]


def test_brokers(compose: dict) -> None:
    """Built from deploy/Dockerfile, distinct ids, advertise <service>:6174, own volume."""
    services = compose["services"]
    ids, adverts, volumes, host_ports = set(), set(), set(), set()
    for name in BROKERS:
        broker = services[name]
        build = broker["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]) == ROOT / "deploy" / "Dockerfile"
        env = _env(broker)
        assert env["COMET_ETCD"] == "etcd:2379"
        assert env["COMET_ADVERTISE_ADDR"] == f"{name}:6174"
        ids.add(env["COMET_BROKER_ID"])
        adverts.add(env["COMET_ADVERTISE_ADDR"])
        [mount] = broker["volumes"]
        volume, target = mount.split(":")
        assert target == "/data" and volume in compose["volumes"]
        volumes.add(volume)
        [port] = broker["ports"]
        assert port.endswith(":6174")
        host_ports.add(port.rsplit(":", 1)[0])
        assert broker["depends_on"]["etcd"]["condition"] == "service_healthy"
        assert broker["healthcheck"]["test"] == ["CMD", "python", "/app/healthcheck.py"]
    assert len(ids) == len(adverts) == len(volumes) == len(host_ports) == 3
    assert len({services[b]["image"] for b in BROKERS}) == 1


def test_price_clients(compose: dict) -> None:
    """The producer and two alert consumers run the examples against all three brokers."""
    services = compose["services"]
    image = services["broker-1"]["image"]
    brokers = sorted(_env(services[b])["COMET_ADVERTISE_ADDR"] for b in BROKERS)
    scripts = {"price-producer": "price_producer.py"} | dict.fromkeys(ALERTS, "price_alert.py")
    for name, script in scripts.items():
        client = services[name]
        assert client["image"] == image
        assert client["build"] == services["broker-1"]["build"]
        assert client["entrypoint"] == ["python", f"/app/examples/{script}"]
        assert (ROOT / "examples" / script).is_file()
        env = _env(client)
        assert sorted(env["BROKER_ADDR"].split(",")) == brokers
        assert env["TOPIC"] == "prices"
        assert client["healthcheck"] == {"disable": True}
        assert {b: d["condition"] for b, d in client["depends_on"].items()} == dict.fromkeys(
            BROKERS, "service_healthy"
        )
    assert _env(services[ALERTS[0]])["GROUP"] == _env(services[ALERTS[1]])["GROUP"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:\n  b: 1\n  c: 'x y'\n", {"a": {"b": 1, "c": "x y"}}),
        ('a:\n  - x:y  # comment\n  - "q"\nb: true\n', {"a": ["x:y", "q"], "b": True}),
        ('t: ["CMD", "python"]\ne:\n', {"t": ["CMD", "python"], "e": None}),
    ],
)
def test_mini_yaml_reads_the_subset(text: str, expected: object) -> None:
    """The subset reader returns what YAML means."""
    assert mini_yaml.loads(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a: &x 1\n",
        "a: |\n  text\n",
        "a: {b: 1}\n",
        "a:\n  - b: 1\n",
        "a: 1\na: 2\n",
        "a:\n\tb: 1\n",
        "a: 1\n   b: 2\n",
    ],
)
def test_mini_yaml_refuses_the_rest(text: str) -> None:
    """Anything outside the subset is an error, never a silent misread."""
    with pytest.raises(ValueError):
        mini_yaml.loads(text)
