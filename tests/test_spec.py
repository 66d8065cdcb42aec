import math

import pytest

from retina_trt import ModelSpec, SpecError, torchvision_spec


def test_defaults_are_the_papers():
    spec = ModelSpec()
    assert spec.anchor_sizes == (32, 64, 128, 256, 512)
    assert spec.anchor_scales == pytest.approx((1.0, 2 ** (1 / 3), 2 ** (2 / 3)))
    assert spec.aspect_ratios == (0.5, 1.0, 2.0)
    assert spec.num_anchors_per_location == 9
    assert spec.p6_from == "c5" and spec.head_norm is None and spec.fpn_channels == 256
    assert spec.box_clamp == pytest.approx(math.log(1000 / 16))
    assert (spec.score_thresh, spec.topk_candidates, spec.nms_thresh) == (0.05, 1000, 0.5)
    assert spec.prior_prob == 0.01
    assert len(spec.class_names) == 80 and spec.class_names[3] == "class_3"


def test_json_round_trip():
    spec = ModelSpec(
        backbone="resnet34",
        num_classes=3,
        class_names=("a", "b", "c"),
        head_norm="group_norm",
        p6_from="p5",
        min_size=512,
        max_size=640,
        detections_per_img=50,
    )
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert isinstance(again.class_names, tuple)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"backbone": "vgg16"}, "backbone"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2, "class_names": ("a",)}, "class_names"),
        ({"p6_from": "c4"}, "p6_from"),
        ({"head_norm": "batch_norm"}, "head_norm"),
        ({"head_norm": "group_norm", "fpn_channels": 48}, "multiple of 32"),
        ({"anchor_sizes": (32, 64)}, "P3..P7"),
        ({"aspect_ratios": (0.0, 1.0)}, "positive"),
        ({"min_size": 800, "max_size": 600}, "max_size"),
        ({"score_thresh": 1.5}, "score_thresh"),
        ({"topk_candidates": 4000}, "3840"),
        ({"pixel_std": (0.2, 0.2)}, "pixel_std"),
        ({"detections_per_img": 0}, "detections_per_img"),
    ],
)
def test_invalid_specs_say_what_is_wrong(kwargs, message):
    with pytest.raises(SpecError, match=message):
        ModelSpec(**kwargs)


def test_spec_is_frozen_and_keyword_only():
    spec = ModelSpec()
    with pytest.raises(AttributeError):
        spec.num_classes = 3
    with pytest.raises(TypeError):
        ModelSpec("resnet50")


def test_from_json_rejects_foreign_input():
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{nope")
    with pytest.raises(SpecError, match="unknown ModelSpec fields"):
        ModelSpec.from_json('{"backbone": "resnet50", "depth": 50}')
    with pytest.raises(SpecError, match="format"):
        ModelSpec.from_json('{"format": "something/9"}')


def test_torchvision_specs():
    v1, v2 = torchvision_spec(1), torchvision_spec(2)
    assert v1.p6_from == "p5" and v1.head_norm is None
    assert v2.p6_from == "c5" and v2.head_norm == "group_norm"
    for spec in (v1, v2):
        assert spec.anchor_rounding == "torchvision" and spec.detections_per_img == 300
        assert spec.num_classes == 91 and spec.size_divisible == 32
