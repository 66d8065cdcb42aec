"""INT8 calibration memory is bounded: the batch comes from an estimate of the memory per image
and what the machine has now (calibration/memory.py), a given batch is lowered when it would not
fit, and a model that cannot calibrate even one image here is refused before any work."""

from __future__ import annotations

import logging

import pytest
from retina_trt.calibration import CalibrationConfig, PrecisionError, memory, prepare_precision


def test_activation_estimate_grows_with_the_pixels(onnx_models):
    dynamic = onnx_models[("onnx", True)]
    small, large = memory.activation_bytes(dynamic, (256, 256)), memory.activation_bytes(dynamic, (512, 512))
    assert small > 10e6 and 3.5 < large / small < 4.5


def test_batch_fits_in_the_memory_there_is(onnx_models, monkeypatch, caplog):
    model = onnx_models[("onnx", False)]
    per_image = memory.OVERHEAD * memory.activation_bytes(model, (256, 384))
    base = memory.MODEL_COPIES * model.stat().st_size
    monkeypatch.setattr(memory, "available_bytes", lambda: int((base + 2.5 * per_image) / memory.BUDGET))
    assert memory.calibration_batch(model, (256, 384), None) == 2
    with caplog.at_level(logging.WARNING):
        assert memory.calibration_batch(model, (256, 384), 8) == 2
    assert "lowered to 2" in caplog.text
    assert memory.calibration_batch(model, (256, 384), 1) == 1
    monkeypatch.setattr(memory, "available_bytes", lambda: 10**13)
    assert memory.calibration_batch(model, (256, 384), None) == memory.MAX_AUTO_BATCH


def test_no_room_for_one_image_is_refused_before_any_work(onnx_models, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 50_000_000)
    out = tmp_path / "m.int8.onnx"
    with pytest.raises(PrecisionError, match=r"needs about .* GB for one image and 0\.1 GB are available; calibrate"):
        prepare_precision(
            onnx_models[("onnx", False)],
            "int8",
            out,
            calibration=CalibrationConfig(source="synthetic", num_images=2),
            use_cache=False,
        )
    assert not out.exists() and not list(tmp_path.iterdir())
