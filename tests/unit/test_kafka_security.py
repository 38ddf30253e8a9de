"""Kafka client security from the environment: one settings object, validated at start,
the options every client takes, and the password kept out of reprs and logs."""

import json
import logging
from pathlib import Path

import pytest
import structlog

from refundctl import config, logs
from schemas.transport import KafkaSecurity
from tests.certs import cert_pem, key_pem, make_ca

from .test_exit_codes import run_main

BASE = {"KAFKA_BOOTSTRAP_SERVERS": "broker-1:9093,broker-2:9093"}
PASSWORD = "s3cret-Scram-Passw0rd"


def sasl_ssl(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **BASE,
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "refund-worker",
        "KAFKA_SASL_PASSWORD": PASSWORD,
        **extra,
    }


def test_plaintext_by_default_with_a_role_and_host_client_id() -> None:
    kafka = config.kafka_settings(BASE, role="worker")
    assert kafka.security == KafkaSecurity()
    assert kafka.client_id.startswith("worker-")
    options = kafka.client_options()
    assert options == {
        "bootstrap_servers": "broker-1:9093,broker-2:9093",
        "client_id": kafka.client_id,
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.producer_options()["acks"] == "all"
    assert kafka.consumer_options()["enable_auto_commit"] is False
    assert kafka.admin_options() == options
    assert config.kafka_settings({**BASE, "KAFKA_CLIENT_ID": "wallet-7"}).client_id == "wallet-7"


def test_sasl_ssl_options_for_every_client(tmp_path: Path) -> None:
    kafka = config.kafka_settings(sasl_ssl(tmp_path), role="ingress")
    for options in (kafka.producer_options(), kafka.consumer_options(), kafka.admin_options()):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == "SCRAM-SHA-512"
        assert options["sasl_plain_username"] == "refund-worker"
        assert options["sasl_plain_password"] == PASSWORD
        # One TLS context per process (the system CAs here), shared by its clients.
        assert options["ssl_context"] is kafka.security.ssl_context
    assert kafka.security.ssl_context is not None
    assert kafka.security.ssl_context.check_hostname


def test_the_password_from_a_file_and_never_in_a_repr(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")  # as a mounted secret usually ends
    env = sasl_ssl(tmp_path, KAFKA_SASL_PASSWORD="", KAFKA_SASL_PASSWORD_FILE=str(secret))
    kafka = config.kafka_settings(env)
    assert kafka.security.sasl_password == PASSWORD
    assert PASSWORD not in repr(kafka)
    assert PASSWORD not in str(kafka.security)
    assert "refund-worker" in kafka.security.describe()
    assert PASSWORD not in kafka.security.describe()
    assert PASSWORD in config.secret_values(env)


def test_the_password_is_scrubbed_from_logs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD)
    env = {"KAFKA_SASL_PASSWORD_FILE": str(secret)}
    saved = structlog.get_config()
    try:
        logs.configure(config.secret_values(env))
        structlog.get_logger().warning("connecting", note=f"user:{PASSWORD}", sasl_password="x")
        logging.getLogger("aiokafka.conn").error("auth with %s failed", PASSWORD)
    finally:
        structlog.configure(**saved)
        for handler in logging.getLogger().handlers[:]:
            if isinstance(handler, logs.LibraryLogHandler):
                logging.getLogger().removeHandler(handler)
    err = capsys.readouterr().err
    assert PASSWORD not in err
    records = [json.loads(line) for line in err.splitlines()]
    assert records[0]["note"] == f"user:{logs.REDACTED}"
    assert records[0]["sasl_password"] == logs.REDACTED
    assert logs.REDACTED in records[1]["event"]


def test_mutual_tls_loads_the_files_at_start(tmp_path: Path) -> None:
    ca = make_ca("test-ca")
    ca_file = ca.write(tmp_path / "test-ca.pem")
    key, cert = ca.issue("refund-test-client", client_auth=True)
    keystore = tmp_path / "client.pem"  # key + certificate chain
    keystore.write_bytes(key_pem(key) + cert_pem(cert) + cert_pem(ca.cert))
    env = {
        **BASE,
        "KAFKA_SECURITY_PROTOCOL": "SSL",
        "KAFKA_SSL_CAFILE": str(ca_file),
        "KAFKA_SSL_CERTFILE": str(keystore),
        "KAFKA_SSL_KEYFILE": str(keystore),
    }
    security = config.kafka_settings(env).security
    assert security.protocol == "SSL"
    assert security.ssl_context is not None
    assert "sasl_mechanism" not in security.connection_options()
    assert security.describe() == "SSL, mutual TLS"


CONFIG_ERRORS = [
    (
        {"KAFKA_SECURITY_PROTOCOL": "TLS"},
        "KAFKA_SECURITY_PROTOCOL must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL, "
        "got 'TLS'",
    ),
    (
        {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
        "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, "
        "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE",
    ),
    (
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "GSSAPI",
        },
        "KAFKA_SASL_MECHANISM must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got 'GSSAPI'",
    ),
    (
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
        },
        "KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT sends the "
        "password in clear text: use SASL_SSL (or a SCRAM mechanism)",
    ),
    (
        {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
        "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
        "does not use SASL (SASL_SSL or SASL_PLAINTEXT does)",
    ),
    (
        {"KAFKA_SSL_CAFILE": "/etc/ca.pem"},
        "KAFKA_SSL_CAFILE set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS "
        "(SSL or SASL_SSL does)",
    ),
    (
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/etc/key.pem"},
        "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (mutual TLS: both)",
    ),
    (
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
        "KAFKA_SSL_CAFILE is not a readable file: /nonexistent/ca.pem",
    ),
    (
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD": "p",
            "KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka",
        },
        "set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both",
    ),
    (
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "u",
            "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/kafka-password",
        },
        "KAFKA_SASL_PASSWORD_FILE cannot be read: /nonexistent/kafka-password "
        "(No such file or directory)",
    ),
]


@pytest.mark.parametrize(("env", "message"), CONFIG_ERRORS)
def test_inconsistent_settings_are_refused_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError) as refused:
        config.kafka_settings({**BASE, **env})
    assert str(refused.value) == message


def test_an_unusable_tls_file_is_a_configuration_error(tmp_path: Path) -> None:
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("hello\n")
    env = {**BASE, "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(not_a_certificate)}
    with pytest.raises(config.ConfigError, match="the TLS files cannot be used"):
        config.kafka_settings(env)


@pytest.mark.parametrize(("env", "message"), CONFIG_ERRORS[:3])
def test_refundctl_prints_one_line_and_exits_2(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["topics", "create"], {**BASE, **env}, capsys)
    assert code == 2
    assert err.splitlines() == [f"refundctl: configuration: {message}"]
