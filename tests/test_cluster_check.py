"""``bgeflow pipeline check`` (the chart's `helm test`): S3 on a real endpoint, KFP and the API faked."""

from __future__ import annotations

import json

import pytest

from bgeflow.cli import main
from bgeflow.platform import cluster_check
from bgeflow.platform.cluster_check import check_api, check_kfp, check_s3


class NotServed(Exception):
    status = 404


def test_s3_reachable_and_missing(s3_bucket: str) -> None:
    ok = check_s3(f"s3://{s3_bucket}/bgeflow")
    assert ok.ok and "0 object(s)" in ok.detail
    missing = check_s3("s3://no-such-bucket-here/bgeflow")
    assert not missing.ok and "does not exist" in missing.detail


def test_kfp_and_api_checks_name_what_is_missing() -> None:
    assert check_kfp("http://kfp:8888", probe=lambda host, ns: "KFP abc123").ok

    def refused(host: str, namespace: str) -> str:
        raise ConnectionError("Connection refused\nmore lines")

    down = check_kfp("http://kfp:8888", probe=refused)
    assert not down.ok and down.detail == "ConnectionError: Connection refused"

    served = check_api("kubeflow.org/v1/PyTorchJob", discover=lambda gv: ["PyTorchJob", "TFJob"])
    assert served.ok
    other = check_api("kubeflow.org/v1/PyTorchJob", discover=lambda gv: ["TFJob"])
    assert not other.ok and "serves TFJob, not PyTorchJob" in other.detail

    def absent(group_version: str) -> list[str]:
        raise NotServed("Not Found")

    none = check_api("kubeflow.org/v1/PyTorchJob", discover=absent)
    assert not none.ok and "kubeflow.org/v1 is not served (HTTP 404)" in none.detail
    with pytest.raises(ValueError, match="expected group/version/Kind"):
        check_api("PyTorchJob")


def test_the_command_runs_every_check_and_fails_on_any(s3_bucket: str, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_check, "_served_kinds", lambda gv: [])
    code = main(["pipeline", "check", "--s3", f"s3://{s3_bucket}/bgeflow", "--api", "kubeflow.org/v1/PyTorchJob"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert code == 1 and not doc["ok"]
    assert [(c["check"], c["ok"]) for c in doc["checks"]] == [(f"s3 s3://{s3_bucket}/bgeflow", True),
                                                              ("api kubeflow.org/v1/PyTorchJob", False)]
    assert "1 of 2 check(s) failed; first: api kubeflow.org/v1/PyTorchJob" in err
    assert main(["pipeline", "check", "--s3", f"s3://{s3_bucket}/bgeflow"]) == 0
    capsys.readouterr()
    assert main(["pipeline", "check"]) == 2
    assert "nothing to check" in capsys.readouterr().err
