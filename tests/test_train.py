import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from retina_trt import CheckpointError, ModelSpec, RetinaNet, load_checkpoint
from retina_trt.cli import main
from retina_trt.data.coco import CocoDataset
from retina_trt.data.synthetic import SyntheticConfig, generate_dataset
from retina_trt.train import TrainConfig, init_frozen_bn_from_data, train

SMALL = SyntheticConfig(min_height=96, max_height=128, min_width=96, max_width=128, max_objects=6, min_object=8)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    ann = generate_dataset(out, num_images=8, seed=0, config=SMALL)
    return CocoDataset.load(ann, out / "train")


def _spec(dataset):
    return ModelSpec(
        backbone="resnet18",
        num_classes=len(dataset.class_names),
        class_names=dataset.class_names,
        fpn_channels=32,
        anchor_sizes=(16, 32, 64, 128, 256),
        min_size=128,
        max_size=128,
    )


def test_lr_schedule():
    config = TrainConfig(iterations=900, lr=0.01, warmup_iters=100, warmup_factor=0.001)
    assert config.lr_at(0) == pytest.approx(1e-5)
    assert config.lr_at(50) == pytest.approx(0.01 * (0.001 * 0.5 + 0.5))
    assert config.lr_at(100) == pytest.approx(0.01)
    assert config.lr_at(599) == pytest.approx(0.01)
    assert config.lr_at(600) == pytest.approx(0.001)
    assert config.lr_at(800) == pytest.approx(0.0001)
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="hinge")


def test_frozen_bn_data_init_normalizes():
    model = RetinaNet(ModelSpec(backbone="resnet18", num_classes=2, fpn_channels=32))
    images = torch.randn(2, 3, 64, 64) * 5 + 3
    init_frozen_bn_from_data(model, images)
    bn = model.backbone.body.bn1
    assert isinstance(bn, FrozenBatchNorm2d)
    out = bn(model.backbone.body.conv1(images))
    assert out.mean().abs() < 1e-3 and (out.var(dim=(0, 2, 3)).mean() - 1).abs() < 1e-2


def test_train_writes_checkpoints_and_resumes(small_dataset, tmp_path):
    output = tmp_path / "model.pt"
    spec = _spec(small_dataset)
    config = TrainConfig(iterations=4, batch_size=2, warmup_iters=2, save_every=2)
    train(spec, small_dataset, output, config)
    state = torch.load(output, weights_only=True)
    assert state["train"]["iteration"] == 4 and len(state["train"]["recent_losses"]) == 4
    assert all(torch.isfinite(torch.tensor(state["train"]["recent_losses"])))
    model = load_checkpoint(output)
    assert model.spec == spec
    # resume: more iterations continue from 4
    longer = TrainConfig(iterations=6, batch_size=2, warmup_iters=2, save_every=2)
    train(spec, small_dataset, output, longer, resume=True)
    assert torch.load(output, weights_only=True)["train"]["iteration"] == 6
    with pytest.raises(CheckpointError, match="different ModelSpec"):
        train(spec.replace(fpn_channels=64), small_dataset, output, longer, resume=True)
    assert not list(tmp_path.glob(".*tmp*"))


def test_train_cli(small_dataset, tmp_path):
    out = tmp_path / "cli.pt"
    code = main(
        [
            "train",
            "--annotations",
            str(small_dataset.annotation_path),
            "--images",
            str(small_dataset.image_dir),
            "--output",
            str(out),
            "--fpn-channels",
            "32",
            "--anchor-sizes",
            "16,32,64,128,256",
            "--min-size",
            "128",
            "--max-size",
            "128",
            "--iterations",
            "2",
            "--batch-size",
            "2",
            "--warmup-iters",
            "1",
        ]
    )
    assert code == 0 and out.is_file()
    assert (
        main(["train", "--annotations", str(tmp_path / "none.json"), "--images", str(tmp_path), "--output", str(out)])
        == 2
    )


def test_trained_backbone_bn_loads_as_frozen_bn(small_dataset, tmp_path):
    from retina_trt.train import unfreeze_backbone_bn

    output = tmp_path / "bn.pt"
    spec = _spec(small_dataset)
    train(spec, small_dataset, output, TrainConfig(iterations=3, batch_size=2, warmup_iters=1, backbone_bn="train"))
    state = torch.load(output, weights_only=True)
    assert not any(k.endswith("num_batches_tracked") for k in state["state_dict"])
    frozen = load_checkpoint(output)
    assert isinstance(frozen.backbone.body.bn1, FrozenBatchNorm2d)
    trainable = load_checkpoint(output)
    unfreeze_backbone_bn(trainable)
    assert isinstance(trainable.backbone.body.bn1, torch.nn.BatchNorm2d)
    trainable.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(frozen(x).cls_logits, trainable(x).cls_logits):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # resuming a BN-trained run keeps training it
    train(
        spec,
        small_dataset,
        output,
        TrainConfig(iterations=4, batch_size=2, warmup_iters=1, backbone_bn="train"),
        resume=True,
    )
    assert torch.load(output, weights_only=True)["train"]["iteration"] == 4


def test_resume_from_a_corrupt_checkpoint_is_a_clear_error(small_dataset, tmp_path, capsys):
    output = tmp_path / "broken.pt"
    output.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        train(_spec(small_dataset), small_dataset, output, TrainConfig(iterations=2, batch_size=2), resume=True)
    code = main(
        [
            "train",
            "--annotations",
            str(small_dataset.annotation_path),
            "--images",
            str(small_dataset.image_dir),
            "--output",
            str(output),
            "--resume",
            "--iterations",
            "2",
        ]
    )
    assert code == 2 and "not a readable PyTorch checkpoint" in capsys.readouterr().err
    assert output.read_bytes() == b"not a checkpoint", "the file is left as it was"


def test_an_unreadable_training_image_is_skipped(small_dataset, tmp_path):
    import shutil

    from retina_trt.train import BatchSampler

    images = tmp_path / "images"
    shutil.copytree(small_dataset.image_dir, images)
    broken = images / small_dataset.images[0]["file_name"]
    broken.write_bytes(b"")
    dataset = CocoDataset.load(small_dataset.annotation_path, images)
    sampler = BatchSampler(dataset, batch_size=4, seed=0, hflip=True)
    for iteration in range(4):  # two epochs of 8 images
        batch_images, targets = sampler.batch(iteration)
        assert len(batch_images) == len(targets) == 4
    assert sampler.skipped == {0}
    train(_spec(dataset), dataset, tmp_path / "m.pt", TrainConfig(iterations=2, batch_size=4, warmup_iters=1))


def test_init_from_starts_a_second_stage_from_the_weights(small_dataset, tmp_path, capsys):
    stage1 = tmp_path / "stage1.pt"
    spec = _spec(small_dataset)
    train(spec, small_dataset, stage1, TrainConfig(iterations=3, batch_size=2, warmup_iters=1, backbone_bn="train"))
    deploy = tmp_path / "stage1_fp16.pt"
    from retina_trt.train import write_deploy_checkpoint

    write_deploy_checkpoint(stage1, deploy, fp16=True)
    stage2 = tmp_path / "stage2.pt"
    # zero iterations of warm-up and lr tiny: the weights must start from stage 1's, not from scratch
    config = TrainConfig(iterations=1, batch_size=2, warmup_iters=0, lr=1e-12, backbone_bn="train", save_every=1)
    train(spec, small_dataset, stage2, config, init_from=deploy)
    before, after = torch.load(deploy, weights_only=True)["state_dict"], torch.load(stage2, weights_only=True)
    assert after["train"]["iteration"] == 1, "a fresh schedule, not stage 1's iteration count"
    for key in ("head.cls.predictor.weight", "backbone.body.conv1.weight", "backbone.fpn.lateral.0.weight"):
        torch.testing.assert_close(after["state_dict"][key], before[key].float(), atol=1e-3, rtol=1e-3)
    # an interrupted second stage resumes from its own output, not from the first stage again
    train(
        spec,
        small_dataset,
        stage2,
        TrainConfig(iterations=2, batch_size=2, warmup_iters=0, backbone_bn="train"),
        resume=True,
        init_from=deploy,
    )
    assert torch.load(stage2, weights_only=True)["train"]["iteration"] == 2
    # other model options than the checkpoint's: a clear error naming the difference, exit 2 at the CLI
    with pytest.raises(CheckpointError, match="fpn_channels: 32 there, 64 asked"):
        train(spec.replace(fpn_channels=64), small_dataset, tmp_path / "other.pt", config, init_from=deploy)
    code = main(
        [
            "train",
            "--annotations",
            str(small_dataset.annotation_path),
            "--images",
            str(small_dataset.image_dir),
            "--output",
            str(tmp_path / "cli.pt"),
            "--init-from",
            str(deploy),
            "--iterations",
            "1",
        ]
    )
    assert code == 2 and "different ModelSpec" in capsys.readouterr().err
    assert not (tmp_path / "cli.pt").exists()
