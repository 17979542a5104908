"""Real data (../shared/data, or $RECBOLE_MM_DATA): skipped with a reason only if absent."""

import numpy as np
import pandas as pd
import pytest

from tests.conftest import shared_dataset


@pytest.fixture(scope="module")
def lfm2k_converted(tmp_path_factory):
    from dataset_converters.mmrec import convert

    src = shared_dataset("lfm2k")
    out = tmp_path_factory.mktemp("lfm2k_data")
    convert(str(src), str(out))
    return str(out)


def test_lfm2k_split_sizes_and_features(lfm2k_converted):
    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset, data_preparation

    config = Config("VBPR", "lfm2k", config_dict={"data_path": lfm2k_converted, "state": "WARNING"})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    assert (len(train.dataset), len(valid.dataset), len(test.dataset)) == (44327, 4799, 7219)
    assert dataset.user_num - 1 == 1858 and dataset.item_num - 1 == 1425
    assert {k: v.shape[1] for k, v in dataset.item_features.items()} == \
        {"text": 384, "audio_vggish": 128, "audio_whisper": 512}
    raw = np.load(shared_dataset("lfm2k") / "text_feat.npy")
    tokens = dataset.field2id_token[dataset.iid_field][1:].astype(int)
    np.testing.assert_allclose(dataset.item_features["text"][1:].numpy(), raw[tokens], rtol=0, atol=0)


def test_lfm2k_short_vbpr_run(lfm2k_converted, run_config):
    from recbole_mm.quick_start import run_recbole_mm

    cfg = dict(run_config, data_path=lfm2k_converted, epochs=3, train_batch_size=2048, eval_batch_size=4194304,
               embedding_size=64, feature_embedding_size=64, use_modalities=["text", "audio_vggish"])
    result = run_recbole_mm("VBPR", "lfm2k", config_dict=cfg, print_result=False)
    # 3 epochs are far from converged, but well above random ranking (20/1425 ~ 0.014)
    assert result["test_result"]["recall@20"] > 0.05


def test_lastfm_converter_reproduces_published_text_features(tmp_path):
    """Raw HetRec tag text -> MiniLM must give the published text_feat.npy rows (cosine >= 0.999)."""
    from dataset_converters import lastfm

    src = shared_dataset("lfm2k")
    out = lastfm.convert(lastfm.build_parser().parse_args([str(src / "raw"), str(tmp_path / "out")]))
    ours = np.load(f"{out}/text_feat.npy")
    artist_ids = np.array([int(x) for x in open(f"{out}/text_feat.ids")])
    mapping = pd.read_csv(src / "i_id_mapping.tsv", sep="\t")
    item_of = pd.Series(mapping.itemID.to_numpy(), index=mapping.artistID.to_numpy())
    published = np.load(src / "text_feat.npy")[item_of.loc[artist_ids].to_numpy()]
    cos = (ours * published).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(published, axis=1)
    assert len(cos) == 1425 and cos.min() >= 0.999
    # and the split kept from lfm2k_og_ids.inter has the published sizes
    sizes = [sum(1 for _ in open(f"{out}/lfm2k.{s}.inter")) - 1 for s in ("train", "valid", "test")]
    assert sizes == [44327, 4799, 7219]


def test_baby_partial_titles_neighbour_policy_vbpr_and_freedom(tmp_path, run_config):
    """The README's Amazon Baby workflow: titles of 3,416 of 7,050 items -> MiniLM text modality ->
    the neighbour missing-modality policy -> VBPR and FREEDOM train on it."""
    from dataset_converters.mmrec import convert
    from recbole_mm.encoders.__main__ import main as encoders
    from recbole_mm.quick_start import run_recbole_mm

    src = shared_dataset("amazon-baby")
    out = tmp_path / "data"
    convert(str(src), str(out), name="baby")
    assert encoders(["text", "--items", str(src / "item_titles_partial.jsonl"), "--output",
                     str(out / "baby" / "text_feat.npy"), "--batch-size", "128", "--quiet"]) == 0
    assert len((out / "baby" / "text_feat.ids").read_text().split()) == 3416
    cfg = dict(run_config, data_path=str(out), epochs=1, train_batch_size=2048, eval_batch_size=4194304,
               modalities={"text": "text_feat.npy"}, missing_modality="neighbour", embedding_size=64,
               feature_embedding_size=64)
    for model in ("VBPR", "FREEDOM"):
        result = run_recbole_mm(model, "baby", config_dict=cfg, print_result=False)
        assert result["test_result"]["recall@20"] > 20 / 7050  # one epoch, but better than random


def test_lfm2k_stage1_features_beat_concatenated_raw(lfm2k_converted):
    """AlignRec's stage-1 target: the fused ICA features score higher than the normalised
    concatenation of the raw text + audio features under zero-shot and item-CF."""
    import re

    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset
    from recbole_mm.feature_quality import run
    from recbole_mm.pretrain import run_stage1

    mods = {"use_modalities": ["text", "audio_vggish"]}
    config = Config("AlignRec", "lfm2k", config_dict={"data_path": lfm2k_converted, "state": "WARNING", **mods})
    run_stage1(config, create_dataset(config), f"{lfm2k_converted}/lfm2k/fused_feat.npy", ["text", "audio_vggish"])
    table = run("lfm2k", lfm2k_converted, ["text", "audio_vggish", "fused"], 10, mods, {"fused": "fused_feat.npy"})
    recall = {}
    for line in table.splitlines():
        m = re.match(r"\| (.+?) \| (zero-shot|item-CF) \| [\d.]+ \| ([\d.]+) \|", line)
        if m:
            recall[(m.group(1), m.group(2))] = float(m.group(3))
    concat = next(k[0] for k in recall if k[0].startswith("concat("))
    for protocol in ("zero-shot", "item-CF"):
        assert recall[("fused", protocol)] > recall[(concat, protocol)], (protocol, recall)
