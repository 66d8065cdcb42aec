import pickle

import pytest
import torch

from retina_trt import CheckpointError, ModelSpec, load_checkpoint, save_checkpoint


def test_round_trip(tiny_model, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "model.pt", epoch=3)
    again = load_checkpoint(path)
    assert again.spec == tiny_model.spec
    for (k, a), (_, b) in zip(tiny_model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob(".*tmp*")), "no temporary files are left"


def test_missing_empty_truncated_and_foreign_files(tiny_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    data = tiny_checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "text.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Evil()}))
    with pytest.raises(CheckpointError, match="not a readable") as exc:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(exc.value)  # never the advice to run the file's code


def test_not_a_retinanet(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a RetinaNet checkpoint.*fc.weight"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="got a list"):
        load_checkpoint(tmp_path / "list.pt")


def test_keys_and_shapes_that_do_not_fit(tiny_model):
    state = tiny_model.state_dict()
    wrong_classes = tiny_model.spec.replace(num_classes=7, class_names=())
    with pytest.raises(CheckpointError, match=r"shape mismatches.*head\.cls\.predictor\.weight"):
        load_checkpoint({"spec": wrong_classes.to_dict(), "state_dict": state})
    partial = {k: v for k, v in state.items() if not k.startswith("head.box.predictor")}
    with pytest.raises(CheckpointError, match=r"2 missing keys.*head\.box\.predictor"):
        load_checkpoint({"spec": tiny_model.spec.to_dict(), "state_dict": partial})
    with pytest.raises(CheckpointError, match="without a spec"):
        load_checkpoint(state)
    assert load_checkpoint(state, spec=tiny_model.spec).spec == tiny_model.spec
    with pytest.raises(CheckpointError, match="invalid ModelSpec"):
        load_checkpoint({"spec": {"backbone": "vgg"}, "state_dict": state})
    with pytest.raises(TypeError):
        load_checkpoint(42)
    with pytest.raises(CheckpointError, match="backbone='resnet50'"):
        load_checkpoint(state, spec=ModelSpec(backbone="resnet50", num_classes=5))
