"""Test helpers: a seeded tiny model with well-spread scores, and a detection comparator."""

from __future__ import annotations

import numpy as np
import torch

from retina_trt import ModelSpec, RetinaNet

TINY_SPEC = ModelSpec(
    backbone="resnet18",
    num_classes=5,
    class_names=("circle", "square", "triangle", "star", "ring"),
    fpn_channels=64,
    min_size=256,
    max_size=384,
)


def make_tiny_model(spec: ModelSpec = TINY_SPEC, seed: int = 0) -> RetinaNet:
    """A seeded RetinaNet whose outputs vary enough that hundreds of candidates pass the
    score threshold with distinct scores and boxes (an untrained head gives near-ties)."""
    torch.manual_seed(seed)
    model = RetinaNet(spec).eval()
    with torch.no_grad():
        for module in [*model.head.cls.convs.modules(), *model.head.box.convs.modules()]:
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.normal_(module.weight, std=0.03)
        torch.nn.init.normal_(model.head.cls.predictor.weight, std=0.3)
        model.head.cls.predictor.bias.fill_(-8.0)
    return model


def as_numpy(result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes, scores, labels) from a dict of tensors, RawDetections or Detections."""
    if isinstance(result, dict):
        return result["boxes"].numpy(), result["scores"].numpy(), result["labels"].numpy()
    if hasattr(result, "boxes_xyxy"):
        return result.boxes_xyxy, result.scores, result.class_ids
    return result.boxes, result.scores, result.labels


def assert_same_detections(got, expected, *, box_tol=1e-3, score_tol=1e-5, min_count=1) -> None:
    """Same detections: every expected one has a partner with the same label, a box within
    ``box_tol`` px and a score within ``score_tol``. Order may differ only among scores closer
    than ``score_tol`` (float noise between runtimes)."""
    gb, gs, gl = as_numpy(got)
    eb, es, el = as_numpy(expected)
    assert len(es) >= min_count, f"expected at least {min_count} detections, got {len(es)}"
    assert len(gs) == len(es), f"{len(gs)} detections vs {len(es)} expected"
    np.testing.assert_allclose(np.sort(gs)[::-1], np.sort(es)[::-1], atol=score_tol, rtol=0)
    unmatched = set(range(len(gs)))
    for i in range(len(es)):
        candidates = [
            j
            for j in unmatched
            if gl[j] == el[i] and abs(gs[j] - es[i]) <= score_tol and np.abs(gb[j] - eb[i]).max() <= box_tol
        ]
        assert candidates, f"expected detection {i} (label {el[i]}, score {es[i]:.6f}, box {eb[i]}) has no match"
        unmatched.remove(min(candidates, key=lambda j: np.abs(gb[j] - eb[i]).max()))


def tie_groups(scores: np.ndarray) -> list[range]:
    """Runs of exactly equal consecutive scores in a score-sorted list (each a range of rows)."""
    groups, start = [], 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or scores[i] != scores[start]:
            groups.append(range(start, i))
            start = i
    return groups


def assert_identical_up_to_ties(got, expected, *, box_tol=1e-3, score_tol=1e-5, min_count=1) -> None:
    """The same detections in the same order, except that rows whose expected scores are
    exactly equal may come in any order among themselves (a sort's order of equal keys is
    unspecified in torchvision and depends on the CPU's sort kernels). Within each such tie
    group the (label, box, score) rows must be the same multiset; everywhere else row i must
    equal row i."""
    gb, gs, gl = as_numpy(got)
    eb, es, el = as_numpy(expected)
    assert len(es) >= min_count, f"expected at least {min_count} detections, got {len(es)}"
    assert len(gs) == len(es), f"{len(gs)} detections vs {len(es)} expected"
    for group in tie_groups(es):
        rows = list(group)
        unmatched = set(rows)
        for i in rows:
            partners = [
                j
                for j in unmatched
                if gl[j] == el[i] and abs(gs[j] - es[i]) <= score_tol and np.abs(gb[j] - eb[i]).max() <= box_tol
            ]
            assert partners, (
                f"row {i} (label {el[i]}, score {es[i]!r}, box {eb[i]}) has no equal row among rows "
                f"{rows[0]}..{rows[-1]} of the result"
                + (" (its tie group)" if len(rows) > 1 else "")
                + f": got labels {gl[rows[0] : rows[-1] + 1]}, scores {gs[rows[0] : rows[-1] + 1]}"
            )
            unmatched.remove(min(partners, key=lambda j: np.abs(gb[j] - eb[i]).max()))


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each of ``boxes`` [N, 4]."""
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def count_matched(want, got, *, min_score: float, iou: float = 0.9) -> tuple[int, int]:
    """(matched, total): ``want``'s detections above ``min_score`` that ``got`` finds with the
    same class and IoU above ``iou`` (for precision comparisons, where scores drift slightly)."""
    wb, ws, wl = as_numpy(want)
    gb, _, gl = as_numpy(got)
    strong = ws > min_score
    matched = 0
    for box, label in zip(wb[strong], wl[strong]):
        same = gl == label
        matched += int(same.any() and iou_one_to_many(box, gb[same]).max() > iou)
    return matched, int(strong.sum())


def wait_until(predicate, timeout_s: float = 15.0, poll_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` passed; its last value."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return bool(predicate())


class ListSink:
    """An event sink that keeps every event in ``events`` (thread-safe), for tests of the analytics."""

    def __init__(self) -> None:
        import threading

        self.events: list[dict] = []
        self._lock = threading.Lock()

    def emit(self, event: dict) -> None:
        with self._lock:
            self.events.append(event)

    def stats(self) -> dict:
        return {"sink": "list", "delivered": len(self.events), "dropped": 0, "buffered": 0}

    def close(self, timeout_s: float = 0.0) -> dict:
        return self.stats()
