"""Shared by the alert-rule and observability tests: where the rules and the dashboard
are, the metric names a PromQL expression uses, and promtool/prometheus or the one
line saying why they are missing."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
ENSURE = PROMETHEUS_DIR / "ensure-promtool.sh"
DASHBOARD = ROOT / "deploy" / "grafana" / "refund-worker.json"

# PromQL's functions, aggregations and keywords: every other bare name is a metric.
PROMQL_WORDS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bottomk",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "delta",
        "deriv",
        "exp",
        "floor",
        "group",
        "histogram_quantile",
        "holt_winters",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "ln",
        "log2",
        "log10",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "predict_linear",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stddev_over_time",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
        "last_over_time",
        "present_over_time",
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
    ]
)
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_NAMES = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBERS = re.compile(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, groupings, ranges,
    strings and Grafana variables removed; what remains that is not PromQL's own)."""
    text = _VARIABLES.sub(" ", expr)
    text = _STRINGS.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    names = set(_NAMES.findall(text))
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every query of the dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in dashboard()["panels"]
        for target in panel.get("targets") or []
    ]


def require(tool: str) -> str:
    """The path of `tool` (promtool, prometheus), or fail with ensure-promtool's line."""
    path = shutil.which(tool)
    if path is None:
        line = subprocess.run(
            ["sh", str(ENSURE), "--check"], capture_output=True, text=True, check=False
        ).stdout.strip()
        pytest.fail(line or f"{tool} not found (deploy/prometheus/ensure-promtool.sh)")
    return path
