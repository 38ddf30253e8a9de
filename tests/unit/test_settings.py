"""The settings' declarations (schemas.setting) against what reads them: the README's
configuration table, refundctl.config's defaults and bounds, the settings dataclasses'
defaults."""

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters import settings as ingress
from adapters.settings import HttpLimits, IngressSettings
from refundctl import config
from refundctl.cli import main
from schemas import database, transport
from schemas.database import DatabaseSettings
from schemas.setting import IntSetting, TextSetting, markdown_row
from schemas.transport import KafkaSettings
from worker import settings as worker
from worker.settings import WorkerSettings

README = Path(__file__).resolve().parents[2] / "README.md"
ENV = {
    "DATABASE_URL": "postgresql://refund:x@db:5432/refund",
    "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
}


def readme_table() -> str:
    """The table of the README's "## Configuration" section."""
    text = README.read_text()
    section = text[text.index("\n## Configuration\n") :]
    start = section.index("| variable | default | meaning |")
    return section[start : section.index("\n\n", start)]


def test_the_readme_table_is_the_declarations() -> None:
    assert readme_table() == config.settings_markdown(), (
        "README.md's configuration table differs from the declarations: paste "
        "`refundctl settings` into it (or change the declaration, not the README)"
    )


def test_each_setting_is_declared_once() -> None:
    names = [setting.env for setting in (*config.SETTINGS, *config.TEST_ONLY_SETTINGS)]
    assert len(names) == len(set(names))
    assert not set(names) & set(config.SECRET_VARIABLES)


def test_the_defaults_operators_see() -> None:
    """As refundctl.config applied them before the declarations (and SPEC pins)."""
    assert worker.METRICS_PORT.default == 9100
    assert worker.BATCH_RECORDS_MAX.default == 500
    assert ingress.REPLY_DEADLINE_MS.default == 3500
    assert (ingress.REPLY_DEADLINE_MS.low, ingress.REPLY_DEADLINE_MS.high) == (100, 3900)
    assert ingress.HTTP_PORT.default == 8080
    assert worker.LATE_REPLY_GRACE_MS.default == 10_000


def test_an_empty_environment_gives_every_declared_default() -> None:
    kafka = config.kafka_settings(ENV)
    db = config.database_settings(ENV)
    assert kafka == dataclasses.replace(
        KafkaSettings(bootstrap_servers="kafka:9092", topics=kafka.topics),
        client_id=kafka.client_id,
    )
    assert kafka.topics.requests == f"{transport.TOPIC_PREFIX.default}cancel-requested"
    assert db == DatabaseSettings(url=ENV["DATABASE_URL"])
    worker_settings = config.worker_settings(ENV)
    assert worker_settings == WorkerSettings(database=db, kafka=worker_settings.kafka)
    assert worker_settings.metrics_port == worker.METRICS_PORT.default
    assert HttpLimits() == HttpLimits(
        **{
            field.name: getattr(ingress, field.name.upper()).default
            for field in dataclasses.fields(HttpLimits)
            if hasattr(ingress, field.name.upper())
        }
    )
    assert IngressSettings.__dataclass_fields__["reply_deadline_ms"].default == 3500


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("naga") / "naga-public.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = serialization.Encoding.PEM
    path.write_bytes(key.public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return {**config.DEV_SECRETS, "NAGA_PUBLIC_KEY_FILE": str(path)}


@pytest.mark.parametrize(
    "setting",
    [s for s in config.SETTINGS if isinstance(s, IntSetting)],
    ids=lambda setting: setting.env,
)
@pytest.mark.parametrize("beyond", ["low", "high"])
def test_an_integer_outside_its_bounds_is_a_configuration_error(
    setting: IntSetting, beyond: str, secrets: dict[str, str]
) -> None:
    value = setting.low - 1 if beyond == "low" else setting.high + 1
    env = {**ENV, **secrets, setting.env: str(value)}
    readers = (config.database_settings, config.ingress_settings, config.worker_settings)
    errors = []
    for read in readers:
        try:
            read(env)
        except config.ConfigError as exc:
            errors.append(str(exc))
    high = 11 if setting is ingress.REPLY_PARTITION else setting.high  # KAFKA_REPLY_PARTITIONS
    expected = f"{setting.env} must be between {setting.low} and {high}, got {value}"
    assert expected in errors, errors


def test_a_row_shows_the_bounds_and_the_default() -> None:
    assert markdown_row(database.POOL_SIZE_MAX) == (
        "| `DATABASE_POOL_SIZE_MAX` | 2 | 1\N{EN DASH}100: connections per worker and per "
        "ingress instance |"
    )
    assert markdown_row(transport.TOPIC_PREFIX).startswith("| `KAFKA_TOPIC_PREFIX` | `refund.` |")
    with pytest.raises(AssertionError):
        IntSetting("X_MS", 5, 1, 4, "a default outside its bounds")
    with pytest.raises(AssertionError):
        TextSetting("X", "", "unset with no meaning")


def test_refundctl_settings_prints_the_table_or_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings"]) == 0
    assert capsys.readouterr().out == config.settings_markdown() + "\n"
    assert main(["settings", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [entry["env"] for entry in printed] == [setting.env for setting in config.SETTINGS]
    assert printed[0] == {"env": "DATABASE_URL", "default": "", "help": database.DATABASE_URL.help}
