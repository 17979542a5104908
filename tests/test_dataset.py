"""MultimodalDataset: features follow their items through RecBole's id remapping; config merge; split."""

import numpy as np
import pytest
import yaml

from recbole_mm.config import Config
from recbole_mm.data import create_dataset, data_preparation
from recbole_mm.data.features import FeatureError
from tests.conftest import FAST


def _config(data_path, name, model="VBPR", config_file_list=None, **overrides):
    return Config(model=model, dataset=name, config_file_list=config_file_list,
                  config_dict={"data_path": data_path, **FAST, **overrides})


def test_feature_rows_follow_items(tiny_dataset):
    data_path, name = tiny_dataset
    dataset = create_dataset(_config(data_path, name))
    id2token = dataset.field2id_token[dataset.iid_field]
    assert list(dataset.item_features) == ["image", "text"]
    for mod, feat in dataset.item_features.items():
        assert feat.dtype.is_floating_point and feat.shape[0] == dataset.item_num
        tokens = np.array([int(t) for t in id2token[1:]])
        # column 0 of row r is r in the file: after alignment row i must hold token(i)
        np.testing.assert_array_equal(feat[1:, 0].numpy(), tokens)
        np.testing.assert_array_equal(feat[1:, 1].numpy(), -tokens)
        assert float(feat[0].abs().sum()) == 0.0  # padding
        assert bool(dataset.item_feature_mask[mod][1:].all()) and not bool(dataset.item_feature_mask[mod][0])
    # RecBole's remapping really did permute ids (otherwise this test proves nothing)
    assert [int(t) for t in id2token[1:]] != sorted(int(t) for t in id2token[1:])


def test_id_file_permuted_rows_and_missing_mean(tiny_dataset):
    data_path, name = tiny_dataset
    folder = f"{data_path}/{name}"
    rng = np.random.default_rng(1)
    order = rng.permutation(60)[:45]  # 45 of 60 items, shuffled
    feat = np.stack([order.astype(np.float32), np.ones(45, np.float32)], axis=1)
    np.save(f"{folder}/partial_feat.npy", feat)
    with open(f"{folder}/partial_feat.ids", "w") as fh:
        fh.write("".join(f"{i}\n" for i in order))
    cfg = _config(data_path, name, modalities={"partial": "partial_feat.npy"})
    dataset = create_dataset(cfg)
    f = dataset.item_features["partial"].numpy()
    mask = dataset.item_feature_mask["partial"].numpy()
    tokens = dataset.field2id_token[dataset.iid_field]
    for i in range(1, dataset.item_num):
        if int(tokens[i]) in set(order.tolist()):
            assert mask[i] and f[i, 0] == int(tokens[i])
        else:
            assert not mask[i] and f[i, 0] == pytest.approx(order.mean(), rel=1e-5)
    with pytest.raises(FeatureError, match=r"15 items have no row .*partial_feat.npy"):
        create_dataset(_config(data_path, name, modalities={"partial": "partial_feat.npy"}, missing_modality="error"))


def test_use_modalities(tiny_dataset):
    data_path, name = tiny_dataset
    dataset = create_dataset(_config(data_path, name, use_modalities=["text"]))
    assert list(dataset.item_features) == ["text"]
    with pytest.raises(FeatureError, match=r"use_modalities names \['audio'\].*\['image', 'text'\]"):
        create_dataset(_config(data_path, name, use_modalities=["audio"]))


def test_dataset_errors_name_the_file(tiny_dataset):
    data_path, name = tiny_dataset
    folder = f"{data_path}/{name}"
    bad = np.load(f"{folder}/text_feat.npy")
    bad[4, 3] = np.inf
    np.save(f"{folder}/text_feat.npy", bad)
    with pytest.raises(FeatureError, match=r"text_feat.npy row 4 \(item id '4'\) contains NaN or inf"):
        create_dataset(_config(data_path, name))
    with pytest.raises(FeatureError, match=r"modality 'gone' file .*gone.npy: file not found"):
        create_dataset(_config(data_path, name, modalities={"gone": "gone.npy"}))


def test_config_merge_order(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    cfg = Config(model="vbpr", dataset=name, config_dict={"data_path": data_path})
    assert cfg["model"] == "VBPR"  # canonical name
    assert cfg["valid_metric"] == "Recall@20" and cfg["topk"] == [10, 20, 50]  # properties/overall.yaml
    assert cfg["embedding_size"] == 64  # properties/model/VBPR.yaml
    assert set(cfg["modalities"]) == {"text", "image"}  # the dataset folder's yaml
    assert cfg["benchmark_filename"] == ["train", "valid", "test"]
    # dataset yaml < model yaml < config file < config dict
    folder_yaml = f"{data_path}/{name}/{name}.yaml"
    conf = yaml.safe_load(open(folder_yaml))
    conf.update({"embedding_size": 7, "learning_rate": 0.5})
    yaml.safe_dump(conf, open(folder_yaml, "w"))
    user_yaml = tmp_path / "user.yaml"
    user_yaml.write_text("reg_weight: 0.25\nlearning_rate: 0.125\nstopping_step: 3\n")
    cfg = Config(model="VBPR", dataset=name, config_file_list=[str(user_yaml)],
                 config_dict={"data_path": data_path, "stopping_step": 4})
    assert cfg["embedding_size"] == 64  # model yaml beats dataset yaml
    assert cfg["learning_rate"] == 0.125 and cfg["reg_weight"] == 0.25  # file beats yamls
    assert cfg["stopping_step"] == 4  # dict beats file


def test_fixed_split_and_test_mask(tiny_dataset, tiny_mmrec):
    import pandas as pd

    data_path, name = tiny_dataset
    raw = pd.read_csv(tiny_mmrec / "tiny.inter", sep="\t")
    expected = [int((raw.x_label == k).sum()) for k in (0, 1, 2)]
    for mask in ("train_valid", "train"):
        cfg = _config(data_path, name, test_mask=mask)
        dataset = create_dataset(cfg)
        train, valid, test = data_preparation(cfg, dataset)
        assert [len(train.dataset), len(valid.dataset), len(test.dataset)] == expected
        iid = dataset.field2token_id[dataset.iid_field]
        uid = dataset.field2token_id[dataset.uid_field]
        for u in (0, 5, 11):
            inner_u = uid[str(u)]
            history = set(test.uid2history_item[inner_u].tolist())
            train_items = {iid[str(i)] for i in raw[(raw.userID == u) & (raw.x_label == 0)].itemID}
            valid_items = {iid[str(i)] for i in raw[(raw.userID == u) & (raw.x_label == 1)].itemID}
            assert train_items <= history
            if mask == "train_valid":
                assert valid_items <= history
            else:
                assert not (valid_items & history)
    with pytest.raises(ValueError, match="test_mask"):
        cfg = _config(data_path, name, test_mask="everything")
        data_preparation(cfg, create_dataset(cfg))


def test_neighbour_policy_uses_training_interactions_only(tiny_dataset):
    from recbole_mm.data.features import neighbour_impute

    data_path, name = tiny_dataset
    folder = f"{data_path}/{name}"
    keep = np.arange(0, 60, 2)  # even item tokens have the modality
    np.save(f"{folder}/half_feat.npy", np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32))
    with open(f"{folder}/half_feat.ids", "w") as fh:
        fh.write("".join(f"{i}\n" for i in keep))
    cfg = _config(data_path, name, modalities={"half": "half_feat.npy"}, missing_modality="neighbour")
    dataset = create_dataset(cfg)
    placeholder = dataset.item_features["half"].clone()
    train, _, _ = dataset.build()
    feat, mask = dataset.item_features["half"].numpy(), dataset.item_feature_mask["half"].numpy()
    assert (~mask[1:]).sum() == 30
    # recompute from the training split alone: must match, and differ from the mean placeholder
    expected, n_nb, _ = neighbour_impute(placeholder.numpy(), mask, train.inter_feat[train.uid_field].numpy(),
                                         train.inter_feat[train.iid_field].numpy())
    np.testing.assert_allclose(feat, expected, rtol=1e-5)
    assert n_nb > 0 and not np.allclose(feat[~mask][1:], placeholder.numpy()[~mask][1:])
    np.testing.assert_array_equal(feat[mask], placeholder.numpy()[mask])
    # split copies share the imputed features (what models are built from)
    assert train.item_features["half"] is dataset.item_features["half"]


def test_batch_indexing_matches_recbole_interaction_indexing(tiny_dataset):
    """dataset[index] gathers each field with one tensor (the dataloaders' per-batch path): the same
    rows as RecBole's Interaction[...] for integer arrays and tensors; masks keep RecBole's path."""
    import torch

    data_path, name = tiny_dataset
    dataset = create_dataset(_config(data_path, name)).build()[0]  # the training split, as batched
    inter = dataset.inter_feat
    index = np.array([5, 0, 5, len(inter) - 1, 2])
    for idx in (index, torch.from_numpy(index), index.astype(np.int32)):
        got, want = dataset[idx], inter[index.tolist()]
        assert set(got.interaction) == set(want.interaction)
        for field in want.interaction:
            assert got[field].dtype == want[field].dtype
            assert torch.equal(got[field], want[field]), field
    mask = np.zeros(len(inter), dtype=bool)
    mask[[1, 3]] = True
    assert torch.equal(dataset[mask][dataset.uid_field], inter[dataset.uid_field][[1, 3]])
