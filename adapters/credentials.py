"""Provider credentials: each provider module declares what it reads (`Secret`), the
configuration reads those declarations, and the provider's routes get the values.

A new provider adds its variables in its own module; nothing here or in `refundctl`
names a provider.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Secret:
    """One credential a provider reads from the environment."""

    variable: str  # the environment variable
    # The public placeholder `refundctl dev` and the tests use; None: the dev stack
    # makes the value itself (a key file).
    dev_value: str | None = None
    # A shared secret (token, key) rather than an account name: the configuration
    # refuses a short one outside the dev stack.
    shared: bool = False
    # The variable names a file and the credential is its content (read once at start).
    file: bool = False
    # Raises ValueError when a file's content cannot work (the process refuses to start).
    check: Callable[[bytes], object] | None = None

    def __post_init__(self) -> None:
        assert self.variable.isupper(), "an environment variable name"
        assert self.check is None or self.file, "only a file's content is checked"
        assert not (self.shared and self.file), "a file is not a shared text secret"


@dataclass(frozen=True)
class ProviderSecrets:
    """Every provider's credentials by variable name; never logged (repr hides them)."""

    values: Mapping[str, str]  # text credentials
    files: Mapping[str, bytes] = field(default_factory=dict)  # file contents

    def value(self, variable: str) -> str:
        return self.values[variable]

    def file(self, variable: str) -> bytes:
        return self.files[variable]

    def __repr__(self) -> str:
        return "ProviderSecrets(<redacted>)"
