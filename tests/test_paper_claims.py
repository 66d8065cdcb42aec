"""The paper-claims script on a tiny budget: it trains three variants, evaluates, and reports
a divergence as such. (`make paper-claims` runs it at the documented budget.)"""

import json

import pytest

from retina_trt.bench import paper_claims


@pytest.mark.slow
def test_paper_claims_runs_end_to_end(tmp_path):
    paper_claims.main(
        [
            "--out",
            str(tmp_path / "out"),
            "--iterations",
            "2",
            "--batch-size",
            "2",
            "--image-size",
            "64",
            "--train-images",
            "4",
            "--val-images",
            "2",
        ]
    )
    report = json.loads((tmp_path / "out" / "paper_claims.json").read_text())
    assert set(report["results"]) == set(paper_claims.VARIANTS)
    assert report["backbone_bn"] == "train" and report["clip_grad_norm"] is None
    table = (tmp_path / "out" / "paper_claims.md").read_text()
    assert "| b_focal_g2_a0.25 |" in table and "34.0 AP" in table


def test_markdown_reports_divergence():
    report = {
        "iterations": 10,
        "batch_size": 2,
        "lr": 0.01,
        "results": {
            "c_ce_no_prior": {"diverged": True, "AP": None, "AP50": None, "AP75": None, "paper": "diverges"},
            "b_focal_g2_a0.25": {"diverged": False, "AP": 0.5, "AP50": 0.75, "AP75": 0.5, "paper": "34.0 AP"},
        },
    }
    table = paper_claims.markdown(report)
    assert "| c_ce_no_prior | yes | — | — | — | diverges |" in table
    assert "| b_focal_g2_a0.25 | no | 50.0 | 75.0 | 50.0 | 34.0 AP |" in table
