"""The drift metrics against values worked out by hand, and the profile a run compares against."""

import math

import numpy as np
import pytest

from monitoring import drift


def test_psi_of_known_shares():
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    expected = 0.25 * math.log(2) + 0.25 * math.log(1.5)
    assert drift.psi([50, 50], [25, 75]) == pytest.approx(expected)
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)


def test_psi_counts_an_empty_bin_as_a_tiny_share_instead_of_infinity():
    value = drift.psi([100, 0], [50, 50])
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - drift.EMPTY_SHARE) * math.log(
        0.5 / drift.EMPTY_SHARE
    )
    assert value == pytest.approx(expected)


def test_jensen_shannon_distance_is_0_for_equal_and_1_for_disjoint_distributions():
    assert drift.jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.jensen_shannon([3, 1], [6, 2]) == pytest.approx(0.0)
    # [0.5, 0.5] against [1, 0]: mixture [0.75, 0.25]; JSD = 0.5 KL(p||m) + 0.5 KL(q||m) in bits.
    m = [0.75, 0.25]
    kl_p = 0.5 * math.log2(0.5 / m[0]) + 0.5 * math.log2(0.5 / m[1])
    kl_q = math.log2(1 / m[0])
    assert drift.jensen_shannon([1, 1], [1, 0]) == pytest.approx(math.sqrt(0.5 * kl_p + 0.5 * kl_q))


def test_wasserstein_is_the_shift_in_baseline_standard_deviations():
    rng = np.random.default_rng(3)
    baseline = rng.normal(100.0, 20.0, 50_000)  # a feature in its own unit: sd 20
    profile = drift.profile_feature(baseline)
    assert profile["std"] == pytest.approx(20.0, rel=0.02)
    shifted = drift.compare_feature(profile, baseline + 10.0, {drift.WASSERSTEIN: 0.2})
    assert shifted["scores"][drift.WASSERSTEIN] == pytest.approx(0.5, abs=0.01)
    same = drift.compare_feature(profile, baseline, {drift.WASSERSTEIN: 0.2})
    assert same["scores"][drift.WASSERSTEIN] == pytest.approx(0.0, abs=0.01)


def test_numeric_bins_are_the_baseline_deciles_and_out_of_range_is_beyond_its_min_and_max():
    baseline = np.arange(1000, dtype=float)
    profile = drift.profile_feature(baseline)
    assert len(profile["edges"]) == drift.BINS - 1
    assert profile["counts"] == [100] * drift.BINS
    current = np.asarray([-5.0, 0.0, 500.0, 999.0, 1200.0, np.nan, np.nan, np.nan])
    result = drift.compare_feature(profile, current, {drift.PSI: 0.2})
    assert result["out_of_range"] == 2
    assert result["null_rate"] == pytest.approx(3 / 8)
    assert result["compared"] == 5
    assert result["scores"][drift.PSI] is None  # 5 rows: too few to score


def test_identical_samples_score_zero_and_a_shift_scores_high_on_every_metric():
    rng = np.random.default_rng(7)
    baseline = rng.normal(0.0, 1.0, 5000)
    profile = drift.profile_feature(baseline)
    metrics = dict(drift.DEFAULT_THRESHOLDS)
    calm = drift.compare_feature(profile, rng.normal(0.0, 1.0, 5000), metrics)["scores"]
    moved = drift.compare_feature(profile, rng.normal(1.0, 1.0, 5000), metrics)["scores"]
    for metric, threshold in metrics.items():
        assert calm[metric] < threshold / 2, (metric, calm)
        assert moved[metric] > threshold * 2, (metric, moved)


def test_categorical_features_pool_unseen_categories_and_score_psi_and_js_only():
    baseline = np.asarray(["web"] * 600 + ["app"] * 400, dtype=object)
    profile = drift.profile_feature(baseline)
    assert profile["kind"] == drift.CATEGORICAL
    assert profile["categories"] == ["web", "app"]
    current = np.asarray(["web"] * 300 + ["app"] * 200 + ["kiosk"] * 500, dtype=object)
    result = drift.compare_feature(profile, current, dict(drift.DEFAULT_THRESHOLDS))
    assert result["out_of_range"] == 500
    assert result["histogram"]["current"] == [300, 200, 500]
    assert result["scores"][drift.PSI] == pytest.approx(drift.psi([600, 400, 0], [300, 200, 500]))
    assert result["scores"][drift.WASSERSTEIN] is None


def test_findings_list_each_feature_and_metric_worst_first():
    results = {
        "a": {"scores": {"psi": 0.05, "jensen_shannon": 0.02}},
        "b": {"scores": {"psi": 0.9, "jensen_shannon": 0.3}},
    }
    rows = drift.findings(results, {"psi": 0.2, "jensen_shannon": 0.1})
    assert [(r["name"], r["metric"], r["drifted"]) for r in rows] == [
        ("b", "psi", True),
        ("b", "jensen_shannon", True),
        ("a", "psi", False),
        ("a", "jensen_shannon", False),
    ]


def _inputs(*bodies, signature=None) -> drift.Table:
    table = drift.Table()
    for body in bodies:
        drift.add_input(table, body, signature)
    return table


def test_collected_payloads_become_named_columns():
    from serving.signature import parse_signature

    signature = parse_signature(
        {"inputs": '[{"type": "double", "name": "amount"}, {"type": "string", "name": "channel"}]'}
    )
    table = _inputs(
        '{"input_data": {"columns": ["amount", "channel"], "data": [[1.5, "web"], [2.5, "app"]]}}',
        '{"input_data": [[3.5, "web"]]}',  # positional: named by the signature
        '{"dataframe_records": [{"amount": null, "channel": "app"}]}',
        signature=signature,
    )
    columns = table.columns()
    assert table.rows == 4 and sorted(columns["channel"].tolist()) == ["app", "app", "web", "web"]
    assert columns["amount"].dtype == np.float64
    assert sorted(columns["amount"][~np.isnan(columns["amount"])].tolist()) == [1.5, 2.5, 3.5]
    azure = _inputs('{"data": [[1, 2, 3]]}')  # Azure's sample scoring scripts
    assert azure.rows == 1 and sorted(azure.columns()) == ["0", "1", "2"]
    tensor = _inputs('{"inputs": {"x": [1.0, 2.0]}}')  # named tensors go through the model server's parser
    assert tensor.columns()["x"].tolist() == [1.0, 2.0]
    for bad in ("not json", '{"input_data": {"columns": ["a", "b"], "data": [[1]]}}'):
        with pytest.raises(drift.DriftInputError):
            _inputs(bad)
    outputs = drift.Table()
    drift.add_output(outputs, "[0, 1, 1]")
    drift.add_output(outputs, '{"predictions": [[0.2, 0.8]]}')
    assert outputs.rows == 4
    predictions = outputs.columns()
    assert sorted(predictions["prediction"][:3].tolist()) == [0, 1, 1]
    assert predictions["prediction.1"][~np.isnan(predictions["prediction.1"])].tolist() == [0.8]


def test_a_csv_is_read_into_typed_columns_and_refused_with_the_line_at_fault():
    columns = drift.read_csv(b"amount,channel\n1.5,web\n,app\n3,web\n", max_rows=10)
    assert np.isnan(columns["amount"][1]) and columns["amount"][2] == 3.0
    assert columns["channel"].tolist() == ["web", "app", "web"]
    padded = drift.read_csv(b"a,b\n 1 , x \n NA,y\n  ,\n", max_rows=10)
    assert np.isnan(padded["a"][1:]).all() and padded["a"][0] == 1.0
    assert padded["b"].tolist() == ["x", "y", None]
    with pytest.raises(drift.DriftInputError, match="Line 3"):
        drift.read_csv(b"a,b\n1,2\n1,2,3\n", max_rows=10)
    with pytest.raises(drift.DriftInputError, match="more than 2 rows"):
        drift.read_csv(b"a\n1\n2\n3\n", max_rows=2)
    with pytest.raises(drift.DriftInputError, match="UTF-8"):
        drift.read_csv("a\n\xe9\n".encode("latin-1"), max_rows=2)
