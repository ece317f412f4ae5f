"""training/anomaly_data.py: labelled built-in anomaly tasks and their protocols."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentwire.runtime.errors import DataError
from latentwire.training.anomaly_data import (
    LABELLED,
    anomaly_split,
    normal_classes,
    split_from_spec,
)


def test_breast_cancer_clean_holds_out_malignant_at_five_percent() -> None:
    s = anomaly_split("breast-cancer", seed=1)
    assert s.name == "breast-cancer"
    assert s.y_fit.sum() == 0 and len(s.x_fit) == len(s.y_fit)
    assert s.x_fit.shape[1] == s.x_test.shape[1] == 30
    assert s.x_fit.dtype == np.float32 and s.y_test.dtype == np.int64
    share = s.y_test.mean()
    assert 0.04 <= share <= 0.06 and s.y_test.sum() >= 5
    # benign cases: 357, all used once; none is both fitted on and tested
    assert len(s.x_fit) + int((s.y_test == 0).sum()) == 357
    fit_rows = {r.tobytes() for r in s.x_fit}
    assert not any(r.tobytes() in fit_rows for r in s.x_test)


def test_unsup_keeps_anomalies_in_the_fit_part_at_the_same_rate() -> None:
    clean = anomaly_split("breast-cancer", seed=2)
    unsup = anomaly_split("breast-cancer", seed=2, protocol="unsup")
    assert 0.04 <= unsup.y_fit.mean() <= 0.06
    np.testing.assert_array_equal(clean.x_test, unsup.x_test)
    assert len(unsup.x_fit) == len(clean.x_fit) + int(unsup.y_fit.sum())


@pytest.mark.parametrize("data", ["digits:3", "wine"])
def test_one_class_sets(data: str) -> None:
    s = anomaly_split(data, seed=0)
    assert s.y_test.sum() >= 1 and s.y_fit.sum() == 0
    if data == "wine":
        assert s.name == "wine:1"  # the largest class (71 of 178)
        assert s.spec["normal"] == 1
    else:
        assert s.spec["normal"] == 3 and s.name == "digits:3"
    assert anomaly_split("digits", normal=3).name == "digits:3"


def test_spec_is_json_and_rebuilds_the_split() -> None:
    s = anomaly_split("digits", normal=7, protocol="unsup", seed=5, prevalence=0.1)
    spec = json.loads(json.dumps(s.spec))
    r = split_from_spec(spec)
    for field in ("x_fit", "y_fit", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(s, field), getattr(r, field))
    other = anomaly_split("digits", normal=7, protocol="unsup", seed=6, prevalence=0.1)
    assert not np.array_equal(other.y_test, s.y_test) or not np.array_equal(other.x_fit, s.x_fit)


def test_classes_and_refusals() -> None:
    assert LABELLED == ("breast-cancer", "digits", "wine")
    assert normal_classes("digits") == tuple(range(10))
    with pytest.raises(DataError, match="labelled sets"):
        anomaly_split("sample-images")
    with pytest.raises(DataError, match="normal class"):
        anomaly_split("digits", normal=12)
    with pytest.raises(DataError, match="protocol"):
        anomaly_split("wine", protocol="semi")
    with pytest.raises(DataError, match="benign"):
        anomaly_split("breast-cancer", normal="malignant")
    with pytest.raises(DataError, match="unknown key"):
        split_from_spec({"data": "wine", "colour": "red"})
