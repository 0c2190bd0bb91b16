"""The `comet` broker command: flags, environment, startup failures, shutdown, services."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from comet.cli.local_broker import LocalBroker, free_port, wait_healthy
from comet.client import CometClient
from comet.records import encode_batch
from comet.v1 import broker_pb2 as pb
from comet.v1 import broker_pb2_grpc

COMET = Path(sys.executable).parent / "comet"
REFERENCE_FLAGS = (
    "--data-dir",
    "--addr",
    "--etcd",
    "--log-level",
    "--broker-id",
    "--advertise-addr",
)
ORIGINAL_RPCS = {
    "CreateTopic",
    "DeleteTopic",
    "ListTopics",
    "GetMetadata",
    "Produce",
    "Subscribe",
    "Poll",
    "Unsubscribe",
    "Consume",
    "Replicate",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any COMET_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMET_")}
    env.update(extra)
    return env


def run_comet(*args: str, env: dict[str, str] | None = None, timeout: float = 20):
    return subprocess.run(
        [str(COMET), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
        stdin=subprocess.DEVNULL,
    )


def test_help_lists_every_reference_flag():
    done = run_comet("--help")
    assert done.returncode == 0, done.stderr
    for flag in REFERENCE_FLAGS:
        assert flag in done.stdout, flag
    # documented defaults of the reference table
    for default in (":6174", "localhost:2379"):
        assert default in done.stdout, default


def test_unreachable_etcd_fails_fast_and_suggests_single_broker_mode(tmp_path):
    started = time.monotonic()
    done = run_comet(
        "--etcd",
        f"127.0.0.1:{free_port()}",
        "--data-dir",
        str(tmp_path / "data"),
        "--addr",
        f"127.0.0.1:{free_port()}",
    )
    assert time.monotonic() - started < 10
    assert done.returncode != 0
    assert '--etcd ""' in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--segment-bytes", "5"], r"segment[.-]bytes.*1024"),
        (["--addr", "nonsense"], r"--addr.*nonsense"),
        (["--log-level", "loud"], r"--log-level"),
        (["--flush-policy", "never"], r"--flush-policy"),
        (["--max-request-bytes", "10"], r"--max-request-bytes"),
        (["--retention-ms", "-5"], r"retention[.-]ms"),
        (["--peer-advertise-addr", ":6174"], r"--peer-advertise-addr.*host"),
        (["--peer-advertise-addr", "127.0.0.1"], r"--peer-advertise-addr"),
        (["--peer-advertise-addr", "127.0.0.1:0"], r"--peer-advertise-addr.*1-65535"),
    ],
)
def test_bad_flag_value_exits_non_zero_naming_it(tmp_path, args, pattern):
    argv = ["--etcd", "", "--data-dir", str(tmp_path / "data")]
    if "--addr" not in args:
        argv += ["--addr", f"127.0.0.1:{free_port()}"]
    done = run_comet(*argv, *args)
    assert done.returncode != 0
    assert re.search(pattern, done.stderr, re.DOTALL), done.stderr
    assert not (tmp_path / "data" / "@meta" / "lock").exists()


def _broker_meta(address: str) -> pb.GetMetadataResponse:
    with grpc.insecure_channel(address) as channel:
        return broker_pb2_grpc.BrokerServiceStub(channel).GetMetadata(
            pb.GetMetadataRequest(), timeout=10
        )


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


def test_environment_applies_when_flag_absent(tmp_path):
    port = free_port()
    data = tmp_path / "env-data"
    env = clean_env(
        COMET_ADDR=f"127.0.0.1:{port}",
        COMET_DATA_DIR=str(data),
        COMET_BROKER_ID="from-env",
        COMET_ADVERTISE_ADDR=f":{port}",
        COMET_LOG_FORMAT="json",
    )
    log = open(tmp_path / "broker.log", "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [str(COMET), "--etcd", "", "--broker-id", "from-flag"],
        env=env,
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        wait_healthy(f"127.0.0.1:{port}", 20, proc)
        meta = _broker_meta(f"127.0.0.1:{port}")
        (me,) = meta.brokers
        assert me.id == "from-flag"  # a flag beats its variable
        assert me.address == f":{port}"  # the variable applies without the flag
        assert (data / "@meta").is_dir()
        # ":PORT" is advertised as such; clients reach it on the host they bootstrapped from
        with CometClient(f"127.0.0.1:{port}") as client:
            client.create_topic("advertised")
            r = client.produce_batch("advertised", 0, encode_batch([(None, b"v")]), acks=1)
            assert r.base_offset == 0
            assert client.fetch("advertised", 0, 0).high_watermark == 1
    finally:
        code = _stop(proc)
    assert code == 0, (tmp_path / "broker.log").read_text()


def test_empty_comet_etcd_variable_means_single_broker_mode(tmp_path):
    """The reference: an empty etcd list is single-broker mode; a variable stands for its flag."""
    port = free_port()
    env = clean_env(
        COMET_ETCD="", COMET_ADDR=f"127.0.0.1:{port}", COMET_DATA_DIR=str(tmp_path / "d")
    )
    log_path = tmp_path / "broker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([str(COMET)], env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    try:
        try:
            wait_healthy(f"127.0.0.1:{port}", 20, proc)
        except RuntimeError:
            pytest.fail(f"COMET_ETCD= did not start single-broker mode:\n{log_path.read_text()}")
        assert len(_broker_meta(f"127.0.0.1:{port}").brokers) == 1
    finally:
        code = _stop(proc)
    assert code == 0


def test_sigterm_with_long_poll_in_flight_exits_zero(tmp_path):
    broker = LocalBroker(data_dir=tmp_path / "data", log_path=tmp_path / "broker.log").start()
    try:
        with CometClient(broker.address) as client:
            client.create_topic("waiting")
        channel = grpc.insecure_channel(broker.address)
        stub = broker_pb2_grpc.BrokerServiceStub(channel)
        request = pb.FetchRequest(topic="waiting", partition=0, offset=0, max_wait_ms=30_000)
        pending = stub.Fetch.future(request, timeout=40)
        with pytest.raises(grpc.FutureTimeoutError):
            pending.result(timeout=0.3)  # the long poll is being held
        started = time.monotonic()
        code = broker.stop(timeout_s=10)
        took = time.monotonic() - started
        assert code == 0, broker.log_text()[-3000:]
        assert took < 5, f"SIGTERM took {took:.1f}s"
        try:
            reply = pending.result(timeout=5)
            assert reply.records == b""
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        channel.close()
        assert '"broker.stopped"' in broker.log_text()
    finally:
        broker.cleanup()


def test_second_broker_on_same_data_dir_refused(broker):
    started = time.monotonic()
    done = run_comet(
        "--etcd", "", "--data-dir", str(broker.data_dir), "--addr", f"127.0.0.1:{free_port()}"
    )
    assert time.monotonic() - started < 15
    assert done.returncode != 0
    assert "in use" in done.stderr, done.stderr
    assert str(broker.data_dir) in done.stderr
    wait_healthy(broker.address, 5)  # the first broker is unharmed
    assert len(_broker_meta(broker.address).brokers) == 1


def test_address_in_use_refused(broker, tmp_path):
    done = run_comet("--etcd", "", "--data-dir", str(tmp_path / "d"), "--addr", broker.address)
    assert done.returncode != 0
    assert "comet: error: cannot listen on" in done.stderr, done.stderr
    assert broker.address in done.stderr


def test_health_and_reflection(broker):
    with grpc.insecure_channel(broker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "comet.v1.BrokerService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {"comet.v1.BrokerService", "grpc.health.v1.Health"} <= services
        pool = descriptor_pool.DescriptorPool(db)
        service = pool.FindServiceByName("comet.v1.BrokerService")
        methods = {m.name for m in service.methods}
        assert ORIGINAL_RPCS | {"ProduceBatch", "Fetch", "ListOffsets", "DescribeTopic"} <= methods
        message = pool.FindMessageTypeByName("comet.v1.Message")
        assert message.fields_by_name["timestamp"].number == 4
