"""Amazon (2014 and 2018 formats), DiffMM/MMSSL pickle and generic converters on fixtures the tests build."""

import gzip
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dataset_converters import amazon, diffmm, generic
from dataset_converters._common import run_cli


def _read_split(folder, name):
    return {s: pd.read_csv(folder / f"{name}.{s}.inter", sep="\t") for s in ("train", "valid", "test")}


def _amazon_fixture(tmp_path, fmt="2014"):
    """8 users x 12 items, every user reviews 10 items (one review duplicated); item B99 has 1 review."""
    rng = np.random.default_rng(0)
    asins = ["B05", "B01", "B03", "B02", "B04", "A00"] + [f"C{i:02d}" for i in range(6)]
    reviews = []
    for u in range(8):
        for t, a in enumerate(rng.choice(asins, 10, replace=False)):
            reviews.append({"reviewerID": f"U{u:02d}", "asin": str(a), "overall": 5.0, "unixReviewTime": 1000 + 10 * t})
    reviews.append(dict(reviews[0], unixReviewTime=5000))  # duplicate (user, item): earliest kept
    reviews.append({"reviewerID": "U00", "asin": "B99", "overall": 1.0, "unixReviewTime": 1})  # dropped by 2-core
    meta = [
        {"asin": "B01", "title": "Soft blanket", "brand": "Acme", "categories": [["Baby", "Bedding"]],
         "description": "Warm.", "imUrl": "http://x/img/b01.jpg"},
        {"asin": "B02", "title": "Teething ring", "categories": [["Baby"]]},
        {"asin": "A00", "title": "", "brand": ""},  # no text at all
        {"asin": "B05", "title": "Bottle", "price": 3.5},
    ]
    rpath, mpath = tmp_path / "reviews_Baby_5.json.gz", tmp_path / "meta_Baby.json.gz"
    with gzip.open(rpath, "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in reviews))
    with gzip.open(mpath, "wt") as fh:
        if fmt == "2014":  # python dict literals, as the 2014 metadata dump
            fh.write("".join(repr(m) + "\n" for m in meta))
        else:  # 2018: JSON, category is a flat list, images in imageURLHighRes
            for m in meta:
                m = dict(m)
                if "categories" in m:
                    m["category"] = m.pop("categories")[0]
                if "imUrl" in m:
                    m["imageURLHighRes"] = [m.pop("imUrl")]
                if "description" in m:
                    m["description"] = [m["description"]]
                fh.write(json.dumps(m) + "\n")
    return str(rpath), str(mpath)


@pytest.mark.parametrize("fmt", ["2014", "2018"])
def test_amazon_converter(tmp_path, fmt):
    rpath, mpath = _amazon_fixture(tmp_path, fmt)
    rpath_bytes = open(rpath, "rb").read()
    out = tmp_path / "out"
    assert run_cli(amazon.main, [rpath, mpath, str(out), "--name", "baby", "--k-core", "2"]) == 0
    folder = out / "baby"
    imap = pd.read_csv(folder / "i_id_mapping.csv", sep="\t")
    # sorted asin -> itemID (MMRec's mapping); B99 (one review) removed by the 2-core
    assert imap["asin"].tolist() == ["A00", "B01", "B02", "B03", "B04", "B05"] + [f"C{i:02d}" for i in range(6)]
    assert imap["itemID"].tolist() == list(range(12))
    splits = _read_split(folder, "baby")
    assert sum(len(f) for f in splits.values()) == 80  # 8 users x 10 distinct items; the duplicate dropped
    for name, size in (("train", 8), ("valid", 1), ("test", 1)):  # per-user 8:1:1
        assert (splits[name].groupby("user_id:token").size() == size).all() and splits[name]["user_id:token"].nunique() == 8
    items = pd.read_json(folder / "baby.items.jsonl", lines=True)
    b01 = items.set_index("asin").loc["B01"]
    assert b01["text"] == "Soft blanket. Brand: Acme. Categories: Baby, Bedding. Warm."
    assert b01["image_url"] == "http://x/img/b01.jpg"
    feats = np.load(folder / "text_feat.npy")
    ids = (folder / "text_feat.ids").read_text().split()
    assert feats.shape == (3, 384) and ids == ["1", "2", "5"]  # A00 has no text; B03/B04 no metadata
    assert open(rpath, "rb").read() == rpath_bytes  # input untouched
    assert run_cli(amazon.main, [rpath, mpath, str(out), "--name", "baby", "--k-core", "2"]) == 2  # no --force


def test_amazon_split_from_mmrec_folder(tmp_path):
    rpath, mpath = _amazon_fixture(tmp_path)
    out = tmp_path / "out"
    assert run_cli(amazon.main, [rpath, mpath, str(out), "--name", "baby", "--k-core", "2", "--no-text",
                                 "--split-order", "time"]) == 0
    first = _read_split(out / "baby", "baby")
    # build an MMRec folder from it (userID/itemID/x_label + id mappings) and convert again keeping that split
    mm = tmp_path / "mmrec"
    mm.mkdir()
    frames = [f.assign(x_label=k) for k, f in enumerate(first.values())]
    inter = pd.concat(frames).rename(columns={"user_id:token": "userID", "item_id:token": "itemID"})
    inter.to_csv(mm / "baby.inter", sep="\t", index=False)
    for f in ("i_id_mapping.csv", "u_id_mapping.csv"):
        (mm / f).write_text((out / "baby" / f).read_text())
    assert run_cli(amazon.main, [rpath, mpath, str(tmp_path / "again"), "--name", "baby", "--split-from", str(mm),
                                 "--no-text"]) == 0
    again = _read_split(tmp_path / "again" / "baby", "baby")
    for s in first:
        assert sorted(map(tuple, first[s].to_numpy())) == sorted(map(tuple, again[s].to_numpy()))
    # an (user, item) pair without a review is named
    inter.loc[inter.index[0], "itemID"] = 99
    inter.to_csv(mm / "baby.inter", sep="\t", index=False)
    assert run_cli(amazon.main, [rpath, mpath, str(tmp_path / "bad"), "--name", "baby", "--split-from", str(mm),
                                 "--no-text"]) == 2


def test_amazon_bad_line_is_named(tmp_path, capsys):
    rpath, mpath = _amazon_fixture(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"reviewerID": "U1", "asin": "B1", "unixReviewTime": 1}\n{"reviewerID": "U2"}\n')
    assert run_cli(amazon.main, [str(bad), mpath, str(tmp_path / "o"), "--name", "x"]) == 2
    assert "bad.json: line 2: missing field(s) ['asin']" in capsys.readouterr().err


def _pickle(path, matrix):
    with open(path, "wb") as fh:
        pickle.dump(matrix, fh)


def test_diffmm_converter_keeps_split(tmp_path):
    src = tmp_path / "diffmm"
    src.mkdir()
    rng = np.random.default_rng(0)
    dense = rng.random((12, 9)) < 0.5
    test_mask = dense & (rng.random((12, 9)) < 0.2)
    train = dense & ~test_mask
    _pickle(src / "trnMat.pkl", sp.coo_matrix(train.astype(np.float32)))
    _pickle(src / "tstMat.pkl", sp.csr_matrix(test_mask.astype(np.float32)))
    np.save(src / "image_feat.npy", rng.normal(size=(9, 4)).astype(np.float32))
    np.save(src / "text_feat.npy", rng.normal(size=(9, 3)).astype(np.float32))
    out = tmp_path / "out"
    assert run_cli(diffmm.main, [str(src), str(out), "--name", "dm", "--valid-from-test"]) == 0
    splits = _read_split(out / "dm", "dm")
    got_test = set(map(tuple, splits["test"].to_numpy()))
    assert got_test == set(zip(*np.nonzero(test_mask)))
    assert set(map(tuple, splits["train"].to_numpy())) == set(zip(*np.nonzero(train)))
    import yaml

    cfg = yaml.safe_load((out / "dm" / "dm.yaml").read_text())
    assert cfg["modalities"] == {"image": "image_feat.npy", "text": "text_feat.npy"}
    # without valMat.pkl and --valid-from-test: 10% of each user's training interactions move to valid
    assert run_cli(diffmm.main, [str(src), str(tmp_path / "o2"), "--name", "dm"]) == 0
    s2 = _read_split(tmp_path / "o2" / "dm", "dm")
    moved = set(map(tuple, s2["valid"].to_numpy()))
    assert moved and moved <= set(zip(*np.nonzero(train)))
    assert len(s2["train"]) + len(s2["valid"]) == int(train.sum())
    # a feature file with the wrong number of rows is named
    np.save(src / "audio_feat.npy", np.zeros((5, 2), np.float32))
    assert run_cli(diffmm.main, [str(src), str(tmp_path / "o3"), "--name", "dm", "--valid-from-test"]) == 2


def test_generic_converter(tmp_path, capsys):
    rows = [("u1", "a", 5, "train"), ("u1", "b", 4, "train"), ("u1", "c", 2, "valid"), ("u2", "a", 5, "test"),
            ("u2", "c", 5, "train"), ("u2", "b", 3, "valid")]
    inter = pd.DataFrame(rows, columns=["user", "item", "rating", "split"])
    inter.to_csv(tmp_path / "inter.csv", index=False)
    pd.DataFrame({"item": ["c", "a", "zz"], "f0": [1.0, 2.0, 3.0], "f1": [0.5, 0.5, 0.5]}).to_parquet(
        tmp_path / "text.parquet")
    np.save(tmp_path / "img.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    (tmp_path / "img.ids").write_text("b\na\nc\n")
    out = tmp_path / "out"
    args = [str(tmp_path / "inter.csv"), str(out), "--name", "g", "--split-column", "split",
            "--feature", f"text={tmp_path / 'text.parquet'}", "--feature", f"image={tmp_path / 'img.npy'}"]
    assert run_cli(generic.main, args) == 0
    splits = _read_split(out / "g", "g")
    assert len(splits["train"]) == 3 and len(splits["valid"]) == 2 and len(splits["test"]) == 1
    assert (out / "g" / "text_feat.ids").read_text().split() == ["c", "a"]  # 'zz' is not an item
    np.testing.assert_array_equal(np.load(out / "g" / "text_feat.npy"), [[1.0, 0.5], [2.0, 0.5]])
    assert (out / "g" / "image_feat.ids").read_text().split() == ["b", "a", "c"]

    # the dataset loads and trains (rows follow the ids)
    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset
    from tests.conftest import FAST

    ds = create_dataset(Config(model="VBPR", dataset="g", config_dict={"data_path": str(out), **FAST}))
    tok = list(ds.field2id_token[ds.iid_field])
    assert ds.item_features["image"][tok.index("b")].tolist() == [0.0, 1.0]
    assert not bool(ds.item_feature_mask["text"][tok.index("b")])

    # ratings filter + random split (6 of each user's 8 interactions rated >= 4: 4 / 1 / 1 per user)
    rated = pd.DataFrame([(u, f"i{k}", 5 if k < 6 else 1) for u in ("u1", "u2") for k in range(8)],
                         columns=["user", "item", "rating"])
    rated.to_csv(tmp_path / "rated.csv", index=False)
    assert run_cli(generic.main, [str(tmp_path / "rated.csv"), str(tmp_path / "o2"), "--name", "g",
                                  "--rating-column", "rating", "--min-rating", "4"]) == 0
    assert [len(f) for f in _read_split(tmp_path / "o2" / "g", "g").values()] == [8, 2, 2]
    # 2 interactions per user left: 8:1:1 leaves valid and test empty, which is refused
    assert run_cli(generic.main, [str(tmp_path / "inter.csv"), str(tmp_path / "o2b"), "--name", "g",
                                  "--rating-column", "rating", "--min-rating", "4"]) == 2
    assert "the valid and test splits are empty" in capsys.readouterr().err
    assert not (tmp_path / "o2b" / "g").exists()
    # errors naming the field and row
    inter.loc[4, "split"] = "holdout"
    inter.to_csv(tmp_path / "bad.csv", index=False)
    assert run_cli(generic.main, [str(tmp_path / "bad.csv"), str(tmp_path / "o3"), "--name", "g",
                                  "--split-column", "split"]) == 2
    assert "field 'split' row 5: value 'holdout'" in capsys.readouterr().err
