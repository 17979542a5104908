"""AlignRec stage 1: the ICA masked-modelling loss falls when modalities share a signal; the
two-stage flow (CLI and --pretrain=true) writes and uses the fused features."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from recbole_mm.encoders.ica import ICAEncoder, PretrainedLayers, load_backbone_layers, pretrain_ica

REPO = Path(__file__).resolve().parent.parent


def _shared_signal(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, generator=g)  # latent shared by both modalities
    a = z @ torch.randn(4, 16, generator=g) + 0.05 * torch.randn(n, 16, generator=g)
    b = z @ torch.randn(4, 12, generator=g) + 0.05 * torch.randn(n, 12, generator=g)
    return {"a": a, "b": b}, {"a": torch.ones(n, dtype=torch.bool), "b": torch.ones(n, dtype=torch.bool)}


def test_masked_loss_falls_on_shared_signal():
    feats, present = _shared_signal()
    _, fused, losses = pretrain_ica(feats, present, epochs=30, batch_size=64, show_progress=False, hidden=32,
                                    tokens_per_modality=4, n_heads=2, output_dim=8)
    assert losses[-1] < 0.6 * losses[0]
    assert fused.shape == (256, 8) and np.isfinite(fused).all()


def test_masked_tokens_do_not_leak_and_missing_rows_are_not_targets():
    enc = ICAEncoder({"a": 10, "b": 7}, hidden=16, tokens_per_modality=5, n_heads=2).eval()
    x = {"a": torch.randn(3, 10), "b": torch.randn(3, 7)}
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[:, 2] = True  # token 2 of modality a
    seq, targets = enc.tokens(x, mask)
    assert targets["a"].shape == (3, 5, 2) and targets["b"].shape == (3, 5, 2)
    x2 = {"a": x["a"].clone(), "b": x["b"]}
    x2["a"][:, 4:6] += 5.0  # change exactly the chunk that is masked
    seq2, _ = enc.tokens(x2, mask)
    torch.testing.assert_close(seq, seq2)  # the masked content reaches no token
    none = {"a": torch.zeros(3, dtype=torch.bool), "b": torch.zeros(3, dtype=torch.bool)}
    assert float(enc.masked_loss(x, none, 0.5)) == 0.0


def _tiny_bert(path) -> str:
    """A 3-layer, 16-wide BERT built from a config (nothing downloaded)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(str(path))
    return str(path)


def _same_weights(ours, theirs):
    mine, ref = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == ref.keys()
    for key in ref:
        torch.testing.assert_close(mine[key], ref[key], rtol=0, atol=0)


def test_backbone_layers_come_from_the_pretrained_model(tmp_path):
    """ica_backbone: the fusion layers are the backbone's own first layers (one tower of a
    vision-language model), at its width; bad paths, towers and depths are named in the error."""
    from transformers import AutoModel

    from tests.tiny_models import build_tiny_clip

    bert = _tiny_bert(tmp_path / "bert")
    layers, width = load_backbone_layers(bert, 2)
    assert width == 16 and len(layers) == 2
    reference = AutoModel.from_pretrained(bert)
    for ours, theirs in zip(layers, reference.encoder.layer):
        _same_weights(ours, theirs)

    clip = build_tiny_clip(str(tmp_path / "clip"))
    clip_ref = AutoModel.from_pretrained(clip)
    for tower in ("text", "vision"):
        layers, _ = load_backbone_layers(clip, 1, tower)
        _same_weights(layers[0], getattr(clip_ref, f"{tower}_model").encoder.layers[0])
    with pytest.raises(AssertionError):  # the two towers really differ, so the pick above means something
        _same_weights(load_backbone_layers(clip, 1, "text")[0][0], clip_ref.vision_model.encoder.layers[0])

    with pytest.raises(ValueError, match="ica_layers: 4 layers asked for.*has 3"):
        load_backbone_layers(bert, 4)
    with pytest.raises(ValueError, match=r"ica_backbone_tower: 'audio'.*vision_model\.encoder\.layers"):
        load_backbone_layers(clip, 1, "audio")
    with pytest.raises(ValueError, match="ica_backbone: cannot load a transformers model from .*nowhere"):
        load_backbone_layers(str(tmp_path / "nowhere"), 1)

    from transformers import LlamaConfig, LlamaModel  # decoder layers need rotary embeddings from outside

    LlamaModel(LlamaConfig(vocab_size=30, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=2)).save_pretrained(str(tmp_path / "llama"))
    with pytest.raises(ValueError, match="ica_backbone: the LlamaDecoderLayer layers of .*llama.* cannot run"):
        load_backbone_layers(str(tmp_path / "llama"), 1)


def test_pretraining_from_a_backbone(tmp_path):
    """The encoder starts from the backbone's weights and its masked loss falls on shared-signal data."""
    bert = _tiny_bert(tmp_path / "bert")
    feats, present = _shared_signal()
    start, _, _ = pretrain_ica(feats, present, epochs=0, show_progress=False, tokens_per_modality=4,
                               output_dim=8, n_layers=2, backbone=bert)
    assert isinstance(start.transformer, PretrainedLayers) and start.mask_token.shape == (16,)
    for ours, theirs in zip(start.transformer.layers, load_backbone_layers(bert, 2)[0]):
        _same_weights(ours, theirs)
    _, fused, losses = pretrain_ica(feats, present, epochs=30, batch_size=64, show_progress=False,
                                    tokens_per_modality=4, output_dim=8, n_layers=2, backbone=bert)
    assert losses[-1] < 0.6 * losses[0]
    assert fused.shape == (256, 8) and np.isfinite(fused).all()


def _stage1_files(folder):
    return sorted(Path(folder).glob("fused-*.npy"))


def test_two_stage_cli_and_one_call(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    base = [f"--dataset={name}", f"--data_path={data_path}", "--ica_epochs=2", "--show_progress=False",
            "--ica_hidden=16", "--ica_heads=2", "--ica_output_dim=8"]
    out = subprocess.run([sys.executable, "-m", "recbole_mm.pretrain", *base], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    [fused] = _stage1_files(Path(data_path) / name)  # keyed by what made it, in the user's dataset folder
    assert np.load(fused).shape[1] == 8 and json.loads(fused.with_suffix(".json").read_text())["encoder"] == "ica"
    again = subprocess.run([sys.executable, "-m", "recbole_mm.pretrain", *base], capture_output=True, text=True,
                           cwd=REPO, timeout=300)
    assert again.returncode == 2 and "--force" in again.stderr
    # stage 2 (same stage-1 settings) picks the file up; data_path relative to the working directory
    assert Path(data_path) == tmp_path / "data"
    run = [sys.executable, str(REPO / "run_recbole_mm.py"), "--model=AlignRec", base[0], "--data_path=data/", *base[2:],
           "--epochs=1", "--embedding_size=8", f"--checkpoint_dir={tmp_path / 'ck'}"]
    out = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and "TEST_RESULT {" in out.stdout, out.stderr[-2000:]
    assert "[fused]: 8-d" in out.stdout + out.stderr and str(fused) in out.stdout + out.stderr  # the log says where
    assert json.loads(fused.with_suffix(".json").read_text())["settings"]["epochs"] == 2  # not re-run
    # one call: stage 1 runs first when the file is missing (pretrain: True by default), with progress
    fused.unlink()
    out = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0 and "TEST_RESULT {" in out.stdout, out.stderr[-2000:]
    assert fused.exists() and "ICA pre-training: epoch 2/2, loss" in out.stdout + out.stderr


def _prepare(data_path, name, **kw):
    """The dataset as the pipeline prepares it for AlignRec (stage 1 included)."""
    from recbole_mm.config import Config
    from recbole_mm.quick_start import load_dataset

    config = Config("AlignRec", name, config_dict={"data_path": data_path, "state": "WARNING", "pretrain": True,
                                                    "show_progress": False, "ica_epochs": 1, "ica_hidden": 16,
                                                    "ica_heads": 2, **kw})
    return load_dataset(config)


def test_stage1_outputs_of_several_settings_coexist(tiny_dataset):
    """Default location: one file per (inputs, modalities, ICA settings, seed); a second setting, or a
    search over them, never stops at a stale file nor destroys the first; pretrain_overwrite re-runs
    the same setting's file only."""
    data_path, name = tiny_dataset
    folder = Path(data_path) / name
    assert _prepare(data_path, name, ica_output_dim=8).item_features["fused"][1].shape == (8,)  # written, loaded
    [first] = _stage1_files(folder)
    stamp = first.stat().st_mtime_ns
    assert _prepare(data_path, name, ica_output_dim=8).item_features["fused"][1].shape == (8,)  # reused
    assert first.stat().st_mtime_ns == stamp
    assert _prepare(data_path, name, ica_output_dim=4).item_features["fused"][1].shape == (4,)
    assert _prepare(data_path, name, ica_output_dim=8, use_modalities=["text"]).item_features["fused"].shape[1] == 8
    assert _prepare(data_path, name, ica_output_dim=8, seed=7).item_features["fused"].shape[1] == 8
    assert len(_stage1_files(folder)) == 4 and first.stat().st_mtime_ns == stamp
    _prepare(data_path, name, ica_output_dim=8, pretrain_overwrite=True)
    assert first.stat().st_mtime_ns != stamp and len(_stage1_files(folder)) == 4
    # pretrain off: an existing file of these settings is used, none is made
    assert _prepare(data_path, name, ica_output_dim=4, pretrain=False).item_features["fused"].shape[1] == 4
    assert "fused" not in _prepare(data_path, name, ica_output_dim=16, pretrain=False).item_features
    assert len(_stage1_files(folder)) == 4


def test_stage1_never_writes_into_an_installed_package(tmp_path):
    """A dataset folder inside an installed package (RecBole's bundled ml-100k) is not the user's:
    stage-1 output goes to mm_cache_dir instead."""
    from types import SimpleNamespace

    import recbole

    from recbole_mm.pretrain import is_user_folder, stage1_dir

    bundled = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    assert bundled.is_dir() and not is_user_folder(str(bundled)) and is_user_folder(str(tmp_path))
    config = {"mm_cache_dir": str(tmp_path / "cache")}
    dataset = SimpleNamespace(dataset_path=str(bundled), dataset_name="ml-100k")
    assert stage1_dir(config, dataset) == str(tmp_path / "cache" / "stage1" / "ml-100k")
    dataset = SimpleNamespace(dataset_path=str(tmp_path), dataset_name="mine")
    assert stage1_dir(config, dataset) == str(tmp_path)
    assert not is_user_folder(str(tmp_path / "missing"))


def test_explicit_encoder_file_refuses_a_stale_stage1_file(tiny_dataset):
    """encoder_file names exactly one file: --pretrain=true reuses it only when its sidecar matches this
    run's modalities and ICA settings; pretrain_overwrite re-runs stage 1; a file without a sidecar,
    or made by another encoder, is the user's own."""
    data_path, name = tiny_dataset
    fused = Path(data_path) / name / "fused_feat.npy"

    def prepare(**kw):
        return _prepare(data_path, name, encoder_file="fused_feat.npy", **kw)

    assert prepare(ica_output_dim=8).item_features["fused"][1].shape == (8,)  # written, then loaded
    assert prepare(ica_output_dim=8).item_features["fused"][1].shape == (8,)  # same settings: reused
    stamp = fused.stat().st_mtime_ns
    with pytest.raises(ValueError, match=r"fused_feat\.json: field 'settings'.*output_dim.*pretrain_overwrite"):
        prepare(ica_output_dim=4)
    with pytest.raises(ValueError, match=r"field 'modalities' is \['image', 'text'\].*\['text'\]"):
        prepare(ica_output_dim=8, use_modalities=["text"])
    with pytest.raises(ValueError, match=r"field 'settings' is \{'backbone': None\}.*'backbone': '/any/model'"):
        prepare(ica_output_dim=8, ica_backbone="/any/model")
    assert fused.stat().st_mtime_ns == stamp  # nothing was overwritten
    assert prepare(ica_output_dim=4, pretrain_overwrite=True).item_features["fused"][1].shape == (4,)
    assert prepare(ica_output_dim=16, pretrain=False).item_features["fused"][1].shape == (4,)  # as it is
    sidecar = fused.with_suffix(".json")
    sidecar.write_text(json.dumps(dict(json.loads(sidecar.read_text()), encoder="beit3")))
    assert prepare(ica_output_dim=16).item_features["fused"][1].shape == (4,)  # another encoder's file
    sidecar.unlink()  # no sidecar: the user's own file, taken as it is
    assert prepare(ica_output_dim=16).item_features["fused"][1].shape == (4,)
