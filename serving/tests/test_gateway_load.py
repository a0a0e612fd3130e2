"""What a gateway reports of its load: the mean and peak in-flight count of every routed deployment."""

from serving.gateway.load import LoadReporter
from serving.logs import JsonLog


def test_a_report_gives_each_routed_deployment_its_mean_and_peak_and_idle_ones_zero():
    routed = [("shop", "blue"), ("shop", "green")]
    reporter = LoadReporter("http://127.0.0.1:1", b"secret", "gw-1", dict, lambda: routed, JsonLog())
    samples = [{("shop", "blue"): 2}, {("shop", "blue"): 4}, {}, {("shop", "blue"): 2, ("old", "red"): 1}]
    report = reporter.report(samples, 1.0)
    assert report["gateway"] == "gw-1"
    assert report["deployments"] == [
        {"endpoint": "old", "deployment": "red", "in_flight": 0.25, "peak": 1},
        {"endpoint": "shop", "deployment": "blue", "in_flight": 2.0, "peak": 4},
        {"endpoint": "shop", "deployment": "green", "in_flight": 0.0, "peak": 0},
    ]
