"""One declaration per environment variable: its name, default, bounds and help.

The layer that owns a setting declares it next to its settings dataclass; the
dataclass's default, `refundctl.config` (which reads and range-checks the environment),
the README's configuration table and the deploy checks all read that one declaration,
so a default or a bound cannot differ between them. Plain data: nothing here reads the
environment.
"""

from collections.abc import Iterable
from dataclasses import dataclass

_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _valid_name(env: str) -> bool:
    return bool(env) and env[0].isalpha() and set(env) <= _NAME_CHARACTERS


@dataclass(frozen=True)
class IntSetting:
    """An integer variable; its unit is the last part of its name (`_MS`, `_MAX`, …)."""

    env: str
    default: int
    low: int
    high: int
    help: str
    shown: str = ""  # the default as the README shows it, when unset means more

    def __post_init__(self) -> None:
        assert _valid_name(self.env), self.env
        assert self.low <= self.high, self.env
        assert self.low <= self.default <= self.high, self.env
        assert self.help, self.env
        assert "\n" not in self.help, self.env

    def within(self, value: int) -> bool:
        return self.low <= value <= self.high

    def shown_default(self) -> str:
        return self.shown or str(self.default)


@dataclass(frozen=True)
class FlagSetting:
    """A true/false variable."""

    env: str
    default: bool
    help: str

    def __post_init__(self) -> None:
        assert _valid_name(self.env), self.env
        assert self.help, self.env
        assert "\n" not in self.help, self.env

    def shown_default(self) -> str:
        return "true" if self.default else "false"


@dataclass(frozen=True)
class TextSetting:
    """A text variable: free text, or one of `choices`; an empty `default` means unset
    has a meaning of its own, told in `shown` (e.g. "— (dev stack)")."""

    env: str
    default: str
    help: str
    choices: tuple[str, ...] = ()
    shown: str = ""  # the default as the README shows it, when it is not `default`

    def __post_init__(self) -> None:
        assert _valid_name(self.env), self.env
        assert self.help, self.env
        assert "\n" not in self.help, self.env
        assert not self.choices or not self.default or self.default in self.choices
        assert self.default or self.shown, f"{self.env}: say what unset means"

    def shown_default(self) -> str:
        return self.shown or f"`{self.default}`"


Setting = IntSetting | FlagSetting | TextSetting


def markdown_row(setting: Setting) -> str:
    """The README's row of one setting: `| variable | default | meaning |`; an integer's
    meaning starts with its bounds (`low`, an en dash, `high`, a colon)."""
    meaning = setting.help
    if isinstance(setting, IntSetting):
        meaning = f"{setting.low}\N{EN DASH}{setting.high}: {meaning}"
    return f"| `{setting.env}` | {setting.shown_default()} | {meaning} |"


def markdown_table(settings: Iterable[Setting]) -> str:
    """The README's configuration table, one row per setting in the given order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows.extend(markdown_row(setting) for setting in settings)
    return "\n".join(rows)


def as_json(setting: Setting) -> dict[str, object]:
    """One setting as plain data (`refundctl settings --json`)."""
    data: dict[str, object] = {"env": setting.env, "default": setting.default}
    if isinstance(setting, IntSetting):
        data |= {"low": setting.low, "high": setting.high}
    if isinstance(setting, TextSetting) and setting.choices:
        data["choices"] = list(setting.choices)
    return data | {"help": setting.help}
