"""Training (paper sec. 4.1, scaled to a CPU).

SGD with momentum 0.9 and weight decay 1e-4, linear warm-up, the learning rate divided by 10 at
2/3 and 8/9 of the iterations, horizontal flips, focal loss (gamma=2, alpha=0.25) with the
prior initialization pi=0.01, frozen BatchNorm in the backbone, ImageNet normalization. Images
go through the runtime's own preprocessing (``preprocess_batch`` + ``PixelNormalizer``), so the
model trains on exactly what it will see at inference.

No ImageNet weights can be downloaded here, so backbones train from scratch; the frozen
BatchNorm layers then get their statistics from the first batch (data-dependent init) and stay
frozen afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d
from tqdm import tqdm

from retina_trt.data.coco import CocoDataset
from retina_trt.errors import CheckpointError, ImageError
from retina_trt.image import preprocess_batch
from retina_trt.model.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from retina_trt.model.loss import retinanet_loss
from retina_trt.model.normalize import PixelNormalizer
from retina_trt.model.postprocess import flatten_level
from retina_trt.model.retinanet import RetinaNet
from retina_trt.spec import ModelSpec
from retina_trt.utils import check_output_file

logger = logging.getLogger(__name__)

LOSSES = ("focal", "ce")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimization settings (defaults: the paper's recipe at a CPU-sized budget).

    ``loss="focal"`` uses alpha/gamma; ``loss="ce"`` is alpha-balanced cross entropy (gamma=0).
    ``prior_init=False`` initializes the class bias to 0 instead of -log((1-pi)/pi).
    ``allow_low_quality_matches`` (torchvision's option, off in the paper) also makes each
    ground-truth box's best anchors foreground, so objects smaller than every anchor still train.
    ``backbone_bn="frozen"`` is the paper's frozen BatchNorm (statistics from the first batch
    when there are no pretrained ones); ``"train"`` trains the backbone's BatchNorm layers (for
    training from scratch) and the checkpoints still load as frozen BatchNorm for inference.
    """

    iterations: int = 2000
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 200
    warmup_factor: float = 0.001
    lr_steps: tuple[float, float] = (2 / 3, 8 / 9)
    hflip: bool = True
    loss: str = "focal"
    alpha: float = 0.25
    gamma: float = 2.0
    prior_init: bool = True
    allow_low_quality_matches: bool = False
    backbone_bn: str = "frozen"
    clip_grad_norm: float | None = 10.0
    seed: int = 0
    save_every: int = 200
    log_every: int = 20

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(f"iterations and batch_size must be >= 1, got {self.iterations}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.backbone_bn not in ("frozen", "train"):
            raise ValueError(f"backbone_bn must be 'frozen' or 'train', got {self.backbone_bn!r}")
        if not 0 <= self.alpha <= 1 or self.gamma < 0:
            raise ValueError(f"alpha must be in [0, 1] and gamma >= 0, got {self.alpha}, {self.gamma}")

    def lr_at(self, iteration: int) -> float:
        """Learning rate of ``iteration`` (0-based): warm-up, then /10 at each step."""
        factor = 1.0
        if iteration < self.warmup_iters:
            t = iteration / max(1, self.warmup_iters)
            factor = self.warmup_factor * (1 - t) + t
        for step in self.lr_steps:
            if iteration >= int(step * self.iterations):
                factor *= 0.1
        return self.lr * factor


def init_frozen_bn_from_data(model: RetinaNet, images: torch.Tensor) -> None:
    """Set every frozen BatchNorm of the body to normalize ``images``' activations (mean 0,
    variance 1 per channel), layer by layer in one forward pass."""

    def hook(module: FrozenBatchNorm2d, inputs):
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-5)
        module.weight.fill_(1.0)
        module.bias.zero_()

    handles = [
        m.register_forward_pre_hook(hook) for m in model.backbone.body.modules() if isinstance(m, FrozenBatchNorm2d)
    ]
    try:
        with torch.no_grad():
            model.backbone.body(images)
    finally:
        for handle in handles:
            handle.remove()


def unfreeze_backbone_bn(model: RetinaNet) -> None:
    """Replace the body's FrozenBatchNorm2d layers by trainable BatchNorm2d with the same
    parameters and statistics (their state-dict keys match, plus ``num_batches_tracked``)."""
    for parent in list(model.backbone.body.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FrozenBatchNorm2d):
                bn = nn.BatchNorm2d(child.weight.numel(), eps=child.eps)
                with torch.no_grad():
                    bn.weight.copy_(child.weight)
                    bn.bias.copy_(child.bias)
                    bn.running_mean.copy_(child.running_mean)
                    bn.running_var.copy_(child.running_var)
                setattr(parent, name, bn)


class BatchSampler:
    """Deterministic batches: a seeded permutation per epoch, flips drawn per sample.

    An image that cannot be read is logged, counted in ``skipped`` and replaced by the next
    readable one of the permutation, so one bad file does not end a training run.
    """

    def __init__(self, dataset: CocoDataset, batch_size: int, seed: int, hflip: bool) -> None:
        self.dataset, self.batch_size, self.seed, self.hflip = dataset, batch_size, seed, hflip
        self.skipped: set[int] = set()
        self._order: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset)))
        return self._order[1]

    def _sample(self, flat: int):
        n = len(self.dataset)
        for attempt in range(n):
            epoch, position = divmod(flat + attempt, n)
            index = int(self._permutation(epoch)[position])
            if index in self.skipped:
                continue
            try:
                return self.dataset[index], epoch, position
            except ImageError as err:
                self.skipped.add(index)
                logger.warning("skipping unreadable training image %s: %s", self.dataset.image_path(index), err)
        raise ImageError(f"no image of {self.dataset.image_dir} can be read")

    def batch(self, iteration: int) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
        images, targets = [], []
        for k in range(self.batch_size):
            sample, epoch, position = self._sample(iteration * self.batch_size + k)
            image, boxes = sample.image, sample.boxes
            if self.hflip and np.random.default_rng([self.seed, epoch, position, 1]).random() < 0.5:
                image = image[:, ::-1].copy()
                width = image.shape[1]
                boxes = (
                    np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
                    if len(boxes)
                    else boxes
                )
            images.append(image)
            targets.append({"boxes": boxes, "labels": sample.labels})
        return images, targets


def _loss_on_batch(
    model: RetinaNet, normalizer: nn.Module, images, targets, config: TrainConfig
) -> dict[str, torch.Tensor]:
    spec = model.spec
    batch = preprocess_batch(images, min_size=spec.min_size, max_size=spec.max_size, size_divisible=spec.size_divisible)
    scales = batch.scale_factors()  # (sy, sx)
    scaled = []
    for target, (sy, sx) in zip(targets, scales):
        boxes = torch.from_numpy(target["boxes"]).float() * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        scaled.append({"boxes": boxes, "labels": torch.from_numpy(target["labels"])})
    x = normalizer(torch.from_numpy(batch.pixels))
    out = model(x)
    anchors = torch.cat(model.anchors(tuple(x.shape[-2:]), out))
    logits = torch.cat([flatten_level(o, spec.num_classes) for o in out.cls_logits], dim=1)
    deltas = torch.cat([flatten_level(o, 4) for o in out.box_deltas], dim=1)
    gamma = config.gamma if config.loss == "focal" else 0.0
    return retinanet_loss(
        logits,
        deltas,
        anchors,
        scaled,
        box_coder_weights=spec.box_coder_weights,
        alpha=config.alpha,
        gamma=gamma,
        allow_low_quality_matches=config.allow_low_quality_matches,
    )


def _check_same_spec(found: ModelSpec, wanted: ModelSpec, source: str | os.PathLike) -> None:
    if found == wanted:
        return
    differ = [
        f"{f.name}: {getattr(found, f.name)!r} there, {getattr(wanted, f.name)!r} asked"
        for f in dataclasses.fields(ModelSpec)
        if getattr(found, f.name) != getattr(wanted, f.name)
    ]
    raise CheckpointError(
        f"{source} has a different ModelSpec ({'; '.join(differ)}); pass the training options it was trained with"
    )


# long function: the training loop with checkpointing and resume in one place (torchvision's way)
def train(
    spec: ModelSpec,
    dataset: CocoDataset,
    output: str | os.PathLike,
    config: TrainConfig,
    *,
    resume: bool = False,
    init_from: str | os.PathLike | None = None,
    num_threads: int | None = None,
) -> Path:
    """Train a RetinaNet of ``spec`` on ``dataset``; checkpoints go to ``output`` atomically.

    With ``resume=True`` and an existing ``output``, training continues from its iteration with
    its optimizer state (the spec and config of the checkpoint must match).

    ``init_from`` starts from another checkpoint's weights (same ModelSpec) with a fresh
    optimizer and a fresh learning-rate schedule (warm-up included): a second training stage,
    or fine-tuning. A resumable ``output`` takes precedence, so an interrupted stage resumes.
    """
    output = check_output_file(output, "training output")  # before any iteration
    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(config.seed)
    sampler = BatchSampler(dataset, config.batch_size, config.seed, config.hflip)
    normalizer = PixelNormalizer(spec)
    model, optimizer_state, start_iteration = _starting_point(
        spec, sampler, normalizer, config, output, resume, init_from
    )
    if config.backbone_bn == "train":
        unfreeze_backbone_bn(model)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    model.train()

    def save(iteration: int, losses: list[float]) -> None:
        save_checkpoint(
            model,
            output,
            train={
                "iteration": iteration,
                "optimizer": optimizer.state_dict(),
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
                "recent_losses": losses[-50:],
            },
        )

    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(
        range(start_iteration, config.iterations),
        desc="train",
        unit="it",
        initial=start_iteration,
        total=config.iterations,
        disable=None,
    )
    for iteration in bar:
        parts, lr = _step(model, optimizer, normalizer, sampler, config, iteration)
        if not torch.isfinite(parts["loss"]):
            save(iteration, losses)
            raise FloatingPointError(
                f"loss became {parts['loss'].item()} at iteration {iteration} (lr {lr:.4g}); the run diverged. "
                "Lower --lr or raise --warmup-iters"
            )
        losses.append(parts["loss"].item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{lr:.2g}")
        if (iteration + 1) % config.log_every == 0:
            logger.info(
                "it %d/%d loss %.4f (cls %.4f box %.4f) lr %.4g %.2f s/it",
                iteration + 1,
                config.iterations,
                np.mean(losses[-config.log_every :]),
                parts["classification"].item(),
                parts["box_regression"].item(),
                lr,
                (time.perf_counter() - started) / (iteration + 1 - start_iteration),
            )
        if (iteration + 1) % config.save_every == 0:
            save(iteration + 1, losses)
    save(config.iterations, losses)
    logger.info(
        "trained %d iterations in %.1f min -> %s",
        config.iterations - start_iteration,
        (time.perf_counter() - started) / 60,
        output,
    )
    return output


def _starting_point(spec, sampler, normalizer, config: TrainConfig, output: Path, resume: bool, init_from):
    """(model, optimizer state or None, first iteration): resumed from ``output``, started from
    ``init_from``'s weights, or a new model (prior init, frozen BN statistics from data)."""
    if resume and output.exists():
        state = read_checkpoint_file(output)
        train_state = state.get("train") if isinstance(state, dict) else None
        if not train_state:
            raise CheckpointError(f"{output} has no training state to resume from")
        model = load_checkpoint(state)
        if model.spec != spec:
            raise CheckpointError(
                f"{output} was trained with a different ModelSpec; use another --output or the same options"
            )
        logger.info("resuming %s at iteration %d of %d", output, int(train_state["iteration"]), config.iterations)
        return model, train_state["optimizer"], int(train_state["iteration"])
    if init_from is not None:
        model = load_checkpoint(read_checkpoint_file(Path(init_from)))
        _check_same_spec(model.spec, spec, init_from)
        logger.info("starting from the weights of %s (fresh optimizer and schedule)", init_from)
        return model, None, 0
    model = RetinaNet(spec)
    if not config.prior_init:
        with torch.no_grad():
            model.head.cls.predictor.bias.zero_()
    if config.backbone_bn == "frozen":
        images, _ = sampler.batch(0)
        batch = preprocess_batch(
            images, min_size=spec.min_size, max_size=spec.max_size, size_divisible=spec.size_divisible
        )
        init_frozen_bn_from_data(model, normalizer(torch.from_numpy(batch.pixels)))
    return model, None, 0


def _step(model, optimizer, normalizer, sampler, config: TrainConfig, iteration: int):
    """One SGD step at ``iteration``: (loss parts, lr); nothing is updated when the loss is not
    finite."""
    lr = config.lr_at(iteration)
    for group in optimizer.param_groups:
        group["lr"] = lr
    images, targets = sampler.batch(iteration)
    parts = _loss_on_batch(model, normalizer, images, targets, config)
    if not torch.isfinite(parts["loss"]):
        return parts, lr
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    if config.clip_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
    optimizer.step()
    return parts, lr


def write_deploy_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike, *, fp16: bool = False) -> Path:
    """Write a deployable checkpoint (spec + weights) without the training state, optionally
    with FP16 weights. It is a checkpoint, not an export: ``export_onnx`` makes the ONNX."""
    model = load_checkpoint(checkpoint)
    if fp16:
        model = model.half()
    return save_checkpoint(model, output)


def export_weights(checkpoint: str | os.PathLike, output: str | os.PathLike, *, fp16: bool = False) -> Path:
    """Deprecated name of :func:`write_deploy_checkpoint` (kept for one release)."""
    warnings.warn("retina_trt.train.export_weights is now write_deploy_checkpoint", DeprecationWarning, stacklevel=2)
    return write_deploy_checkpoint(checkpoint, output, fp16=fp16)
