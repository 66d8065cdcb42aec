"""The README's precision figures: `make precision` end to end (slow: about 5 minutes).

INT8 (entropy, 512 synthetic calibration images) within 0.5 AP point of FP32 and FP16 within 0.1,
on the demo model's 300-image held-out split, through ONNX Runtime.
"""

import pytest

from retina_trt.bench.precision import run

pytestmark = pytest.mark.slow


def test_int8_and_fp16_keep_the_fp32_ap(tmp_path):
    from retina_trt.bench.precision import MODELS

    report = run(tmp_path, weights=MODELS / "shapes_r18.pt", calib_images=512, method="entropy",
                 eval_images=None, cache_dir=tmp_path / "cache")  # fmt: skip
    assert abs(report["delta_ap_points"]["fp16"]) <= 0.1
    assert abs(report["delta_ap_points"]["int8"]) <= 0.5
    assert (tmp_path / "precision.md").is_file()
