"""Why a process or a command stops, in three kinds, each with its exit code.

SPEC: 0 ok, 1 refused, 2 usage or configuration, 3 a dependency unreachable or
refusing us (Kafka, PostgreSQL, TLS, authentication). The code that finds a failure
raises one of these with a one-line `str()`; `refundctl.cli.main` is the one place that
turns them (and the client libraries' own errors) into an exit code and one line.
Plain exceptions, no I/O: every package may raise them.
"""

from typing import ClassVar

EXIT_REFUSED = 1
EXIT_MISCONFIGURED = 2
EXIT_UNAVAILABLE = 3

# The dependencies a failure can name.
KAFKA = "kafka"
POSTGRESQL = "postgresql"
HTTP_LISTENER = "http listener"  # the ingress's own port


class Failure(Exception):
    """A reason to stop; `str()` is one line for the operator."""

    exit_code: ClassVar[int] = EXIT_REFUSED


class Refused(Failure):
    """The request itself is refused (a business rule, nothing to redo): exit 1."""

    exit_code = EXIT_REFUSED


class Misconfigured(Failure):
    """The configuration cannot work; `str()` says what to set: exit 2."""

    exit_code = EXIT_MISCONFIGURED


class Unavailable(Failure):
    """A dependency is unreachable or refuses us (connection, TLS, authentication,
    authorization, no answer in time): exit 3. Running again may work once the
    dependency (or our credentials for it) is fixed."""

    exit_code = EXIT_UNAVAILABLE

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency}: {reason}")
        self.dependency = dependency
        self.reason = reason
