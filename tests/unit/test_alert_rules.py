"""deploy/prometheus/rules.yml: valid for promtool, every alert unit-tested by
rules_test.yml (`promtool test rules`), and every expression names only metrics the
ingress and the worker export, as they are named on the wire. (The end-to-end test
tests/e2e/test_observability.py checks the names against a live scrape too, and loads
the rules into a real Prometheus.)"""

import subprocess

import yaml
from prometheus_client import generate_latest

from adapters.bus import BusCounters
from adapters.http_server import HttpCounters
from adapters.metrics import IngressMetrics
from tests.observability import (
    RULES,
    RULES_TEST,
    alert_rules,
    dashboard_queries,
    metric_names,
    require,
    rule_groups,
)
from worker.metrics import WorkerMetrics


def exported_names() -> set[str]:
    """The sample names the two registries expose (counters with `_total`, histograms
    with `_bucket`, `_sum`, `_count`), process_* included; a labelled family that has
    no sample yet (worker outcomes before the first) by its declared type."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    registries = [
        IngressMetrics(BusCounters(), HttpCounters()).registry,
        WorkerMetrics().registry,
    ]
    names = set()
    for registry in registries:
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ")
                for suffix in suffixes.get(kind, ("",)):
                    names.add(name if name.endswith(suffix) else name + suffix)
            elif line and not line.startswith("#"):
                names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def test_promtool_checks_the_rules() -> None:
    promtool = require("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = require("promtool")
    tested = subprocess.run(
        [promtool, "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=RULES_TEST.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing_and_has_a_severity() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test") or []
        if case.get("exp_alerts")
    }
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), names
    assert set(names) <= fired, f"alerts never seen firing in rules_test.yml: {set(names) - fired}"
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
    wanted = {  # the list, by what each alert is about
        "RefundDeadlineMisses",
        "RefundRequestsUnanswered",
        "RefundConsumerLagHigh",
        "RefundConsumerLagGrowing",
        "RefundDeadLetters",
        "RefundFencedBatches",
        "RefundWorkerGroupEmpty",
        "RefundBatchRetries",
        "RefundIngressShedding",
    }
    assert wanted <= set(names)


def test_rules_and_dashboard_name_only_exported_metrics() -> None:
    exported = exported_names()
    assert "refund_worker_dead_letters_total" in exported  # counters end in _total
    assert "refund_worker_dead_letters" not in exported
    assert "process_cpu_seconds_total" in exported
    for group in rule_groups():
        for rule in group["rules"]:
            used = metric_names(rule["expr"])
            assert used, rule
            assert used <= exported, f"{rule.get('alert')}: {sorted(used - exported)}"
    for title, expr in dashboard_queries():
        used = metric_names(expr)
        assert used, title
        assert used <= exported, f"dashboard panel {title!r}: {sorted(used - exported)}"


def test_metric_names_are_read_out_of_promql() -> None:
    assert metric_names(
        'sum by (cause) (increase(refund_worker_dead_letters_total{cause="x"}[10m])) > 0'
    ) == {"refund_worker_dead_letters_total"}
    assert metric_names(
        "(sum(refund_worker_group_member) or vector(0)) < 1 and on() time() - "
        "max by (partition) (refund_worker_consumer_lag_updated_timestamp_seconds) > 1e3"
    ) == {"refund_worker_group_member", "refund_worker_consumer_lag_updated_timestamp_seconds"}
    assert metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(refund_ingress_request_seconds_bucket"
        "[$__rate_interval])))"
    ) == {"refund_ingress_request_seconds_bucket"}
    assert metric_names("deriv(sum(refund_worker_consumer_lag)[10m:30s])") == {
        "refund_worker_consumer_lag"
    }
