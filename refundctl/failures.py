"""From an exception to an exit code and one line: the boundary of `refundctl.cli.main`.

SPEC: 0 ok, 1 refused, 2 usage or configuration, 3 a dependency unreachable or refusing
us. Our own failures say which they are (`schemas.failures`); the client libraries'
errors (aiokafka, asyncpg, the socket and TLS layers) are classified here by their type
and by the library they came from. A failure of Kafka or PostgreSQL names the
dependency, its address (never a password) and where that address came from (the
environment or the dev stack's `stack.json`). When Kafka could not even be reached, one
bounded probe connection tells why (refused, TLS, authentication, a listener speaking
another protocol): aiokafka only says "Unable to bootstrap".
"""

import asyncio
import errno
import os
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import asyncpg
from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn

from refundctl.apache_kafka import ApacheKafkaUnavailable
from refundctl.logs import REDACTED
from schemas.failures import (
    EXIT_MISCONFIGURED,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    HTTP_LISTENER,
    KAFKA,
    POSTGRESQL,
    Failure,
    Misconfigured,
    Unavailable,
)
from schemas.transport import KafkaSettings
from worker.consumer import GroupJoinStalled

PROBE_TIMEOUT_S = 10.0  # the one connection that finds why Kafka could not be reached
LISTEN_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})
DEPENDENCY_VARIABLES = {KAFKA: "KAFKA_BOOTSTRAP_SERVERS", POSTGRESQL: "DATABASE_URL"}


@dataclass(frozen=True)
class Classified:
    exit_code: int
    dependency: str | None  # kafka, postgresql, http listener; None: not a dependency's
    reason: str  # one line, without the dependency's name
    probe_kafka: bool = False  # Kafka was not reached: a probe may say why


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from (or during), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _library_of(exc: BaseException) -> str | None:
    """The dependency whose client library raised `exc` (its innermost frame wins)."""
    found = None
    traceback: TracebackType | None = exc.__traceback__
    while traceback is not None:
        module = str(traceback.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("asyncpg"):
            found = POSTGRESQL
        elif module.startswith("aiokafka"):
            found = KAFKA
        traceback = traceback.tb_next
    return found


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "no details"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate is not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, socket.gaierror):
        return f"the host name does not resolve ({exc.strerror})"
    if exc.errno:  # asyncio's "Connect call failed (…)" hides the errno's own words
        return f"{os.strerror(exc.errno).lower()} ({exc.strerror or exc})"
    return exc.strerror or str(exc) or type(exc).__name__


def classify(exc: BaseException) -> Classified | None:
    """The exit code and reason of `exc`; None for what is not a failure we know (a bug:
    the caller lets its traceback show)."""
    for cause in _chain(exc):
        if isinstance(cause, Unavailable):
            return Classified(EXIT_UNAVAILABLE, cause.dependency, _one_line(cause.reason))
        if isinstance(cause, GroupJoinStalled):
            return Classified(EXIT_UNAVAILABLE, KAFKA, _one_line(str(cause)))
        if isinstance(cause, ApacheKafkaUnavailable):
            return Classified(EXIT_UNAVAILABLE, "apache kafka", _one_line(str(cause)))
        if isinstance(cause, Misconfigured):
            return Classified(EXIT_MISCONFIGURED, None, _one_line(str(cause)))
        if isinstance(cause, asyncpg.ClientConfigurationError) or (
            isinstance(cause, ValueError)
            and not isinstance(cause, ssl.SSLError)  # an untrusted server: unavailable
            and _library_of(cause) == POSTGRESQL
        ):  # the driver refuses DATABASE_URL (a port that is no number, say)
            reason = f"DATABASE_URL cannot be used: {cause}"
            return Classified(EXIT_MISCONFIGURED, None, _one_line(reason))
        if isinstance(cause, kafka_errors.KafkaConnectionError):
            return Classified(EXIT_UNAVAILABLE, KAFKA, _one_line(str(cause)), probe_kafka=True)
        if isinstance(
            cause,
            kafka_errors.TopicAuthorizationFailedError
            | kafka_errors.GroupAuthorizationFailedError
            | kafka_errors.ClusterAuthorizationFailedError,
        ):
            what = type(cause).__name__.removesuffix("Error")
            return Classified(EXIT_UNAVAILABLE, KAFKA, f"not authorized ({what}): {cause}")
        if isinstance(cause, kafka_errors.KafkaError):
            return Classified(
                EXIT_UNAVAILABLE, KAFKA, _one_line(f"{type(cause).__name__}: {cause}")
            )
        if isinstance(cause, asyncpg.PostgresError | asyncpg.InterfaceError):
            reason = _one_line(f"{type(cause).__name__}: {cause}")
            return Classified(EXIT_UNAVAILABLE, POSTGRESQL, reason)
        if isinstance(cause, OSError):
            dependency = _library_of(cause)
            if dependency is None and cause.errno in LISTEN_ERRNOS:
                dependency = HTTP_LISTENER
            return Classified(
                EXIT_UNAVAILABLE,
                dependency,
                _one_line(_os_reason(cause)),
                probe_kafka=dependency == KAFKA,
            )
    if isinstance(exc, Failure):
        return Classified(exc.exit_code, None, _one_line(str(exc)))
    return None


async def probe_kafka(kafka: KafkaSettings, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a connection to the first bootstrap server fails, in words; None when it
    connects (then the original error stands)."""
    server = kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        return f"not a host:port: {server!r}"
    security = kafka.security
    protocol = f"KAFKA_SECURITY_PROTOCOL={security.protocol}"
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                client_id=kafka.client_id,
                request_timeout_ms=int(timeout_s * 1000),
                **security.connection_options(),
            )
    except TimeoutError:
        return f"no answer within {timeout_s:g} s ({protocol}: does the listener speak it?)"
    except ssl.SSLCertVerificationError as exc:
        trusted = security.ssl_cafile and f"KAFKA_SSL_CAFILE={security.ssl_cafile}"
        return (
            f"TLS: the broker's certificate is not trusted ({exc.verify_message}; trusted: "
            f"{trusted or 'the system CAs'})"
        )
    except ssl.SSLError as exc:
        return f"TLS handshake failed ({exc.reason or exc}; {protocol})"
    except (kafka_errors.AuthenticationFailedError, kafka_errors.SaslAuthenticationFailed) as exc:
        return f"authentication failed ({security.describe()}): {_one_line(str(exc))}"
    except kafka_errors.UnsupportedSaslMechanismError as exc:
        return f"SASL refused ({security.describe()}): {_one_line(str(exc))}"
    except kafka_errors.KafkaConnectionError as exc:
        return (
            f"the broker closed the connection without answering ({protocol}: does the "
            f"listener expect another protocol, TLS or SASL?): {_one_line(str(exc))}"
        )
    except kafka_errors.KafkaError as exc:
        return _one_line(f"{type(exc).__name__}: {exc}")
    except OSError as exc:
        return _one_line(_os_reason(exc))
    conn.close()
    return None


def address_of(dependency: str, env: Mapping[str, str]) -> str | None:
    """The dependency's address as configured, without credentials."""
    if dependency == KAFKA:
        return env.get("KAFKA_BOOTSTRAP_SERVERS") or None
    if dependency == POSTGRESQL and env.get("DATABASE_URL"):
        try:
            parts = urlsplit(env["DATABASE_URL"])
            return f"{parts.netloc.rpartition('@')[2]}{parts.path}" or None
        except ValueError:
            return None
    return None


def describe(
    classified: Classified,
    given_env: Mapping[str, str],
    env: Mapping[str, str],
    cwd: Path,
    *,
    dev: bool = False,
) -> dict[str, str | int | None]:
    """The fields of the error line: dependency, address, where the address came from,
    reason, exit code. `given_env` is the environment as the process received it,
    `env` with the dev stack's endpoints merged in."""
    dependency = classified.dependency
    fields: dict[str, str | int | None] = {"dependency": dependency}
    variable = DEPENDENCY_VARIABLES.get(dependency or "")
    if variable is not None:
        fields["address"] = address_of(dependency or "", env)
        if given_env.get(variable):
            fields["source"] = f"{variable} from the environment"
        elif dev:
            fields["source"] = "started by refundctl dev"
        elif env.get(variable):
            fields["source"] = f"{variable} from the dev stack's .refund-dev/stack.json"
        else:
            fields["source"] = f"{variable} not set"
    fields["error"] = classified.reason
    fields["exit_code"] = classified.exit_code
    return fields


def scrubbed(
    fields: Mapping[str, str | int | None], secret_values: Iterable[str]
) -> dict[str, str | int | None]:
    """`fields` with every secret value replaced (a password in a library's message)."""
    secrets = sorted({value for value in secret_values if value.strip()}, key=len, reverse=True)
    result: dict[str, str | int | None] = {}
    for key, value in fields.items():
        if isinstance(value, str):
            for secret in secrets:
                value = value.replace(secret, REDACTED)
        result[key] = value
    return result


def line(fields: Mapping[str, str | int | None]) -> str:
    """The text form: `refundctl: kafka at 127.0.0.1:9092 (KAFKA_BOOTSTRAP_SERVERS from
    the environment): connection refused`."""
    dependency = fields.get("dependency")
    if not dependency:
        prefix = "configuration: " if fields["exit_code"] == EXIT_MISCONFIGURED else ""
        if fields["exit_code"] == EXIT_REFUSED:
            prefix = ""
        return f"refundctl: {prefix}{fields['error']}"
    where = ""
    if "source" in fields:
        address = fields.get("address")
        where = f" at {address} ({fields['source']})" if address else f" ({fields['source']})"
    return f"refundctl: {dependency}{where}: {fields['error']}"
