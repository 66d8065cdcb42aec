"""ModelSpec: everything about a RetinaNet that is not a weight.

A ModelSpec travels with every artifact (checkpoint, ONNX ``metadata_props``, engine header) so
that any stage can rebuild the model, its anchors, its preprocessing and its postprocessing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from retina_trt.errors import SpecError

SPEC_FORMAT = "retina_trt.ModelSpec/1"

BACKBONES: dict[str, tuple[int, int, int]] = {
    # name -> channels of C3, C4, C5 (torchvision ImageNet architectures)
    "resnet18": (128, 256, 512),
    "resnet34": (128, 256, 512),
    "resnet50": (512, 1024, 2048),
    "resnet101": (512, 1024, 2048),
    "resnet152": (512, 1024, 2048),
    "resnext101_32x8d": (512, 1024, 2048),
}
P6_SOURCES = ("c5", "p5")
HEAD_NORMS = (None, "group_norm")
ANCHOR_ROUNDINGS = ("none", "torchvision")
# TensorRT's TopK layer takes K < 3840 (onnx-tensorrt docs/operators.md).
MAX_TOPK = 3840
# Pyramid levels of the paper (sec. 4): P3..P7, strides 8..128.
PYRAMID_LEVELS = (3, 4, 5, 6, 7)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _tuple_of(value: Any, kind: type, name: str) -> tuple:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SpecError(f"ModelSpec.{name} must be a sequence of {kind.__name__}, got {value!r}")
    try:
        values = tuple(kind(v) for v in value)
    except (TypeError, ValueError, OverflowError) as err:
        raise SpecError(f"ModelSpec.{name} must hold {kind.__name__} values, got {value!r}"[:300]) from err
    if kind is float and not all(math.isfinite(v) for v in values):
        raise SpecError(f"ModelSpec.{name} must hold finite numbers, got {values}")
    return values


def _check_class_name(name: str) -> None:
    """Names are written to files and terminals: no control or formatting characters."""
    if not name or len(name) > MAX_CLASS_NAME:
        raise SpecError(
            f"ModelSpec.class_names: each name must have 1 to {MAX_CLASS_NAME} characters, got {name[:40]!r}"
        )
    bad = [ch for ch in name if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")]
    if bad:
        raise SpecError(
            f"ModelSpec.class_names: {name[:40]!r} holds control characters {bad[:3]!r}; give printable names"
        )


MAX_IMAGE_SIDE = 8192
MAX_CLASS_NAME = 200
# head and FPN weights a spec may ask for (4096 channels x 16 head convs would be ~19 GB)
MAX_HEAD_PARAMS = 500_000_000
# Upper bounds of the integer fields (documented in README "Failure behaviour").
SPEC_LIMITS = {
    "num_classes": 10_000,
    "fpn_channels": 4096,
    "num_head_convs": 16,
    "min_size": MAX_IMAGE_SIDE,
    "max_size": MAX_IMAGE_SIDE,
    "size_divisible": 1024,
    "detections_per_img": 10_000,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Architecture, anchors, preprocessing and postprocessing settings of a RetinaNet.

    Defaults are the paper's (Lin et al., sec. 4 and 4.1) with torchvision's conventions where
    the paper is silent. Pixel mean/std are for RGB images scaled to [0, 1].

    Attributes:
        backbone: one of ``BACKBONES``.
        num_classes: number of object classes K (no background class).
        class_names: K names; generated as ``class_<i>`` when empty.
        p6_from: ``"c5"`` (paper, torchvision v2) or ``"p5"`` (torchvision v1).
        head_norm: ``None`` (paper, torchvision v1) or ``"group_norm"`` (GroupNorm(32), v2).
        fpn_channels: width of the FPN and of both subnets (256 in the paper).
        num_head_convs: 3x3 conv + ReLU layers in each subnet before the predictor (4).
        anchor_sizes: anchor area side per level P3..P7 (32..512).
        anchor_scales: scale multipliers per location (2^0, 2^(1/3), 2^(2/3)).
        aspect_ratios: height/width ratios per location (0.5, 1, 2).
        anchor_rounding: ``"none"`` (paper) or ``"torchvision"`` (sizes truncated to int,
            base anchors rounded, as torchvision's AnchorGenerator does).
        box_coder_weights: (wx, wy, ww, wh) of the box coder.
        box_clamp: clamp of dw/dh before exp, log(1000/16).
        min_size / max_size: shorter side target and longer side cap of the resize.
        size_divisible: the padded network input is a multiple of this.
        pixel_mean / pixel_std: RGB normalization, in [0, 1] units.
        score_thresh, topk_candidates, nms_thresh, detections_per_img: sec. 4.1 inference.
        prior_prob: pi of the classification bias initialization (0.01).
    """

    backbone: str = "resnet50"
    num_classes: int = 80
    class_names: tuple[str, ...] = ()
    p6_from: str = "c5"
    head_norm: str | None = None
    fpn_channels: int = 256
    num_head_convs: int = 4
    anchor_sizes: tuple[float, ...] = (32.0, 64.0, 128.0, 256.0, 512.0)
    anchor_scales: tuple[float, ...] = (1.0, 2.0 ** (1.0 / 3.0), 2.0 ** (2.0 / 3.0))
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    anchor_rounding: str = "none"
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    box_clamp: float = math.log(1000.0 / 16)
    min_size: int = 800
    max_size: int = 1333
    size_divisible: int = 128
    pixel_mean: tuple[float, float, float] = _IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = _IMAGENET_STD
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    prior_prob: float = 0.01

    # long function: validation of every ModelSpec field in turn, one check a field
    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalize through object.__setattr__
        if self.backbone not in BACKBONES:
            raise SpecError(f"ModelSpec.backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}")
        # Sane upper bounds first: a spec may come from an untrusted file (engine header, ONNX
        # metadata, checkpoint), and these sizes allocate (class names, anchors, tensors).
        for name, limit in SPEC_LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                raise SpecError(f"ModelSpec.{name} must be <= {limit}, got {value} (a damaged or foreign file?)")
        if not isinstance(self.num_classes, int) or isinstance(self.num_classes, bool) or self.num_classes < 1:
            raise SpecError(f"ModelSpec.num_classes must be an int >= 1, got {self.num_classes!r}")
        names = _tuple_of(self.class_names, str, "class_names")
        if not names:
            names = tuple(f"class_{i}" for i in range(self.num_classes))
        if len(names) != self.num_classes:
            raise SpecError(
                f"ModelSpec.class_names has {len(names)} names but num_classes is "
                f"{self.num_classes}; give one name per class (or none)"
            )
        for name in names:
            _check_class_name(name)
        set_(self, "class_names", names)
        if self.p6_from not in P6_SOURCES:
            raise SpecError(f"ModelSpec.p6_from must be one of {P6_SOURCES}, got {self.p6_from!r}")
        if self.head_norm not in HEAD_NORMS:
            raise SpecError(f"ModelSpec.head_norm must be one of {HEAD_NORMS}, got {self.head_norm!r}")
        self._check_positive_int("fpn_channels")
        self._check_positive_int("num_head_convs")
        head_params = 9 * self.fpn_channels**2 * (2 * self.num_head_convs + 5)  # both heads + FPN outputs
        if head_params > MAX_HEAD_PARAMS:
            raise SpecError(
                f"ModelSpec asks for {self.fpn_channels} FPN channels and {self.num_head_convs} head convolutions, "
                f"about {head_params / 1e9:.1f} G weights (limit {MAX_HEAD_PARAMS / 1e9:.1f} G): a damaged or "
                "foreign file?"
            )
        if self.head_norm == "group_norm" and self.fpn_channels % 32:
            raise SpecError(
                f"ModelSpec.head_norm='group_norm' uses 32 groups, so fpn_channels must be a "
                f"multiple of 32, got {self.fpn_channels}"
            )
        for name in ("anchor_sizes", "anchor_scales", "aspect_ratios"):
            values = _tuple_of(getattr(self, name), float, name)
            if not values or len(values) > 16 or any(not (0 < v <= MAX_IMAGE_SIDE) for v in values):
                raise SpecError(f"ModelSpec.{name} must be 1 to 16 positive values <= {MAX_IMAGE_SIDE}, got {values}")
            set_(self, name, values)
        if len(self.anchor_sizes) != len(PYRAMID_LEVELS):
            raise SpecError(
                f"ModelSpec.anchor_sizes needs one size per level P3..P7 "
                f"({len(PYRAMID_LEVELS)}), got {len(self.anchor_sizes)}"
            )
        if self.anchor_rounding not in ANCHOR_ROUNDINGS:
            raise SpecError(
                f"ModelSpec.anchor_rounding must be one of {ANCHOR_ROUNDINGS}, got {self.anchor_rounding!r}"
            )
        weights = _tuple_of(self.box_coder_weights, float, "box_coder_weights")
        if len(weights) != 4 or any(w <= 0 for w in weights):
            raise SpecError(f"ModelSpec.box_coder_weights must be 4 positive numbers, got {weights}")
        set_(self, "box_coder_weights", weights)
        set_(self, "box_clamp", float(self.box_clamp))
        if not (self.box_clamp > 0 and math.isfinite(self.box_clamp)):
            raise SpecError(f"ModelSpec.box_clamp must be > 0, got {self.box_clamp}")
        for name in ("min_size", "max_size", "size_divisible"):
            self._check_positive_int(name)
        if self.max_size < self.min_size:
            raise SpecError(f"ModelSpec.max_size ({self.max_size}) must be >= min_size ({self.min_size})")
        for name in ("pixel_mean", "pixel_std"):
            values = _tuple_of(getattr(self, name), float, name)
            if len(values) != 3:
                raise SpecError(f"ModelSpec.{name} must have 3 (RGB) values, got {values}")
            set_(self, name, values)
        if any(s <= 0 for s in self.pixel_std):
            raise SpecError(f"ModelSpec.pixel_std must be positive, got {self.pixel_std}")
        for name in ("score_thresh", "nms_thresh", "prior_prob"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0 or (name == "prior_prob" and value in (0.0, 1.0)):
                raise SpecError(f"ModelSpec.{name} must be in [0, 1] (open for prior_prob), got {value}")
            set_(self, name, value)
        self._check_positive_int("topk_candidates")
        if self.topk_candidates >= MAX_TOPK:
            raise SpecError(
                f"ModelSpec.topk_candidates must be < {MAX_TOPK} (TensorRT's TopK limit), got {self.topk_candidates}"
            )
        self._check_positive_int("detections_per_img")

    def _check_positive_int(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise SpecError(f"ModelSpec.{name} must be an int >= 1, got {value!r}")

    # -- derived values -------------------------------------------------------------------------
    @property
    def num_anchors_per_location(self) -> int:
        """A: anchors per feature-map location (scales x aspect ratios)."""
        return len(self.anchor_scales) * len(self.aspect_ratios)

    @property
    def backbone_channels(self) -> tuple[int, int, int]:
        """Channels of C3, C4, C5."""
        return BACKBONES[self.backbone]

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with ``changes`` applied (validated like a new spec)."""
        return dataclasses.replace(self, **changes)

    # -- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dict with a ``format`` tag."""
        data = {"format": SPEC_FORMAT}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            data[field.name] = list(value) if isinstance(value, tuple) else value
        return data

    def to_json(self, *, indent: int | None = None) -> str:
        """JSON text; ``ModelSpec.from_json(spec.to_json()) == spec``."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; unknown keys or a foreign ``format`` raise SpecError."""
        if not isinstance(data, Mapping):
            raise SpecError(f"a ModelSpec must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        fmt = data.pop("format", SPEC_FORMAT)
        if fmt != SPEC_FORMAT:
            raise SpecError(
                f"unsupported ModelSpec format {fmt!r} (this retina_trt reads {SPEC_FORMAT!r}); "
                "upgrade retina_trt or re-export the model"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"unknown ModelSpec fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelSpec:
        """Parse JSON text written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SpecError(f"ModelSpec JSON is not valid JSON: {err}") from err
        return cls.from_dict(data)


def torchvision_spec(version: int, *, num_classes: int = 91, class_names: Sequence[str] = ()) -> ModelSpec:
    """The settings of torchvision's ``retinanet_resnet50_fpn`` (v1) or ``..._v2`` (v2).

    torchvision's anchor sizes are truncated to int and its base anchors rounded; it pads to a
    multiple of 32 and keeps 300 detections per image, so a model built from this spec gives
    torchvision's results.
    """
    if version not in (1, 2):
        raise SpecError(f"torchvision RetinaNet version must be 1 or 2, got {version!r}")
    return ModelSpec(
        backbone="resnet50",
        num_classes=num_classes,
        class_names=tuple(class_names),
        p6_from="p5" if version == 1 else "c5",
        head_norm=None if version == 1 else "group_norm",
        anchor_rounding="torchvision",
        min_size=800,
        max_size=1333,
        size_divisible=32,
        detections_per_img=300,
    )
