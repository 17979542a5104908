"""Image and multimodal-LLM encoders on tiny random models built from configs; resumable cache; PCA."""

import json

import numpy as np
import pytest

from recbole_mm.encoders.__main__ import main
from tiny_models import build_tiny_clip, build_tiny_llava, build_tiny_siglip, build_tiny_vit, write_images


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return build_tiny_clip(str(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_tiny_llava(str(tmp_path_factory.mktemp("llava")))


def _items(tmp_path, n=5, broken=True):
    """items.csv with n images, one missing file and (optionally) one file that is not an image."""
    write_images(str(tmp_path / "img"), [f"p{i}" for i in range(n)])
    rows = [f"{100 + i},img/p{i}.png,Item {i},Brand {i % 2}" for i in range(n)]
    rows.append(f"{100 + n},img/missing.png,No picture,B")
    if broken:
        (tmp_path / "img" / "broken.png").write_bytes(b"not a png")
        rows.append(f"{101 + n},img/broken.png,Broken picture,B")
    (tmp_path / "items.csv").write_text("itemID,image,title,brand\n" + "\n".join(rows) + "\n")
    return str(tmp_path / "items.csv")


def test_image_cli_pooling_failures_and_sidecar(tmp_path, clip_dir, capsys):
    items = _items(tmp_path)
    outs = {}
    for pooling in ("projection", "cls", "mean"):
        out = tmp_path / f"image_{pooling}.npy"
        assert main(["image", "--items", items, "--output", str(out), "--model", clip_dir, "--pooling", pooling,
                     "--batch-size", "2", "--quiet"]) == 0
        outs[pooling] = np.load(out)
        ids = (tmp_path / f"image_{pooling}.ids").read_text().split()
        assert ids == [str(100 + i) for i in range(5)]  # missing and broken images get no row
        meta = json.loads((tmp_path / f"image_{pooling}.json").read_text())
        assert meta["pooling"] == pooling and meta["items"] == 5 and meta["failed"] == 2
        assert {f["id"] for f in meta["failures"]} == {"105", "106"}
        assert not (tmp_path / f"image_{pooling}.cache").exists()  # cache removed after success
    assert outs["projection"].shape == (5, 8) and outs["cls"].shape == (5, 16) and outs["mean"].shape == (5, 16)
    err = capsys.readouterr().err
    assert "item 105" in err and "not on disk" in err and "item 106" in err


def test_image_batching_does_not_change_features(tmp_path, clip_dir):
    items = _items(tmp_path, broken=False)
    feats = []
    for bs in ("1", "4"):
        out = tmp_path / f"f{bs}.npy"
        assert main(["image", "--items", items, "--output", str(out), "--model", clip_dir, "--batch-size", bs,
                     "--quiet"]) == 0
        feats.append(np.load(out))
    np.testing.assert_allclose(feats[0], feats[1], atol=1e-5)
    again = tmp_path / "again.npy"
    assert main(["image", "--items", items, "--output", str(again), "--model", clip_dir, "--batch-size", "4",
                 "--quiet"]) == 0
    np.testing.assert_array_equal(np.load(again), feats[1])  # deterministic


def test_siglip_poolings_match_the_model(tmp_path):
    """SigLIP: default pooling is the joint projection; cls is the attention-pooling head's output."""
    import torch
    from transformers import AutoImageProcessor, SiglipModel

    from recbole_mm.encoders.image import load_image

    siglip = build_tiny_siglip(str(tmp_path / "siglip"))
    items = _items(tmp_path, n=3, broken=False)
    outs = {}
    for pooling in (None, "cls", "mean"):
        out = tmp_path / f"s_{pooling}.npy"
        args = ["image", "--items", items, "--output", str(out), "--model", siglip, "--batch-size", "2", "--quiet"]
        assert main(args + (["--pooling", pooling] if pooling else [])) == 0
        outs[pooling] = np.load(out)
        assert json.loads((tmp_path / f"s_{pooling}.json").read_text())["pooling"] == (pooling or "projection")
        assert (tmp_path / f"s_{pooling}.ids").read_text().split() == ["100", "101", "102"]  # 103's file is missing

    model = SiglipModel.from_pretrained(siglip).eval()
    pixels = AutoImageProcessor.from_pretrained(siglip)(
        images=[load_image(str(tmp_path / "img" / f"p{i}.png")) for i in range(3)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        joint = model.get_image_features(pixel_values=pixels)
        tower = model.vision_model(pixel_values=pixels)
    joint = getattr(joint, "pooler_output", joint)
    np.testing.assert_allclose(outs[None], joint.numpy(), atol=1e-5)
    np.testing.assert_allclose(outs["cls"], tower.pooler_output.numpy(), atol=1e-5)
    np.testing.assert_allclose(outs["mean"], tower.last_hidden_state.mean(1).numpy(), atol=1e-5)
    assert not np.allclose(outs["cls"], outs["mean"], atol=1e-3)  # the attention head is not a plain mean
    # SigLIP has no projection layer: its joint-space image embedding is that pooled output
    np.testing.assert_allclose(outs[None], outs["cls"], atol=1e-6)


def test_image_dir_mode_and_vision_only_model(tmp_path):
    vit = build_tiny_vit(str(tmp_path / "vit"))
    write_images(str(tmp_path / "pics"), ["a1", "b2", "c3"])
    out = tmp_path / "v.npy"
    assert main(["image", "--image-dir", str(tmp_path / "pics"), "--output", str(out), "--model", vit,
                 "--quiet"]) == 0
    assert np.load(out).shape == (3, 16) and (tmp_path / "v.ids").read_text().split() == ["a1", "b2", "c3"]
    # a vision-only model has no joint projection
    assert main(["image", "--image-dir", str(tmp_path / "pics"), "--output", str(tmp_path / "w.npy"), "--model", vit,
                 "--pooling", "projection", "--quiet"]) == 2


def test_resume_skips_finished_parts_and_refuses_other_settings(tmp_path, clip_dir, monkeypatch):
    from recbole_mm.encoders import image as image_mod

    items = _items(tmp_path, n=6, broken=False)
    out = tmp_path / "r.npy"
    calls = []
    original = image_mod.ImageEncoder.encode_images

    def flaky(self, images):
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run dies during its third batch
        return original(self, images)

    monkeypatch.setattr(image_mod.ImageEncoder, "encode_images", flaky)
    args = ["image", "--items", items, "--output", str(out), "--model", clip_dir, "--batch-size", "2",
            "--part-size", "2", "--quiet"]
    with pytest.raises(KeyboardInterrupt):
        main(args)
    assert not out.exists() and len(list((tmp_path / "r.cache").glob("part-*.npz"))) == 2
    calls.clear()
    assert main(args) == 0
    assert calls == [2]  # only the unfinished part ran again (the 7th item has no image file)
    monkeypatch.setattr(image_mod.ImageEncoder, "encode_images", original)
    fresh = tmp_path / "fresh.npy"
    assert main(["image", "--items", items, "--output", str(fresh), "--model", clip_dir, "--quiet"]) == 0
    np.testing.assert_allclose(np.load(out), np.load(fresh), atol=1e-5)
    # a leftover cache with other settings is not mixed in
    (tmp_path / "r.cache").mkdir()
    (tmp_path / "r.cache" / "settings.json").write_text(json.dumps({"encoder": "image", "pooling": "mean"}))
    assert main(args + ["--force"]) == 0  # --force discards it


def test_mllm_second_to_last_layer_mean_pooled_normalised(tmp_path, llava_dir):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from recbole_mm.encoders.mllm import MLLMEncoder, fill_prompt

    paths = write_images(str(tmp_path / "img"), ["a", "b", "c"])
    prompts = [fill_prompt("Title: {title}. Brand: {brand}", {"title": t, "brand": ""})
               for t in ("red shoe", "a much longer product title with several words", "cup")]
    assert prompts[0] == "Title: red shoe. Brand: unknown"
    enc = MLLMEncoder(llava_dir, pooling="mean")
    batched, errors = enc(list(zip(prompts, paths)))
    assert not errors and batched.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, rtol=1e-5)
    single = np.concatenate([enc([(p, i)])[0] for p, i in zip(prompts, paths)])
    np.testing.assert_allclose(batched, single, atol=1e-4)  # batching (right padding) = no batching

    # by hand: hidden_states[-2] (second-to-last layer), mean over tokens, L2
    processor, model = AutoProcessor.from_pretrained(llava_dir), AutoModelForImageTextToText.from_pretrained(llava_dir)
    from PIL import Image

    inputs = processor(text=[enc._text(prompts[0], True)], images=[Image.open(paths[0]).convert("RGB")],
                       return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs, output_hidden_states=True).hidden_states
    assert len(hidden) == 4  # embeddings + 3 layers
    expected = torch.nn.functional.normalize(hidden[-2][0].mean(0), dim=0).numpy()
    np.testing.assert_allclose(batched[0], expected, atol=1e-5)

    last, _ = MLLMEncoder(llava_dir, pooling="last")([(prompts[0], paths[0])])
    assert not np.allclose(last[0], batched[0])


def test_mllm_cli_with_pca_and_missing_images(tmp_path, llava_dir):
    items = _items(tmp_path, n=6)
    out = tmp_path / "mllm.npy"
    assert main(["mllm", "--items", items, "--output", str(out), "--model", llava_dir, "--prompt",
                 "{title} by {brand}", "--pca", "3", "--quiet"]) == 0
    feats = np.load(out)
    assert feats.shape == (8, 3)  # items without a readable image are encoded from the prompt alone
    np.testing.assert_allclose(feats.mean(0), 0.0, atol=1e-5)  # PCA centres
    pca = np.load(tmp_path / "mllm.pca.npz")
    assert pca["components"].shape == (3, 32)
    meta = json.loads((tmp_path / "mllm.json").read_text())
    assert meta["pca"] == 3 and meta["layer"] == -2 and meta["pooling"] == "mean" and meta["prompt"] == "{title} by {brand}"
    strict = tmp_path / "strict.npy"
    assert main(["mllm", "--items", items, "--output", str(strict), "--model", llava_dir, "--require-image",
                 "--quiet"]) == 0
    assert (tmp_path / "strict.ids").read_text().split() == [str(100 + i) for i in range(6)]
    assert np.load(strict).shape == (6, 32)
