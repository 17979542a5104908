"""recbole_mm.recommend / recbole_mm.similar: top-K export round trip, FAISS top-K = model top-K,
similar items against brute force, and the CLIs' bad-input lines."""

from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from recbole_mm import recommend as rec


def train_checkpoint(model, tiny_dataset, run_config, **extra) -> str:
    from recbole_mm.quick_start import run_recbole_mm

    data_path, name = tiny_dataset
    run_recbole_mm(model, name, config_dict=dict(run_config, data_path=data_path, epochs=1, **extra),
                   print_result=False)
    (path,) = glob.glob(os.path.join(run_config["checkpoint_dir"], f"{model}-*.pth"))
    return path


@pytest.mark.parametrize("model", ["BPR", "LightGCN", "VBPR", "FREEDOM"])
def test_topk_round_trip_and_faiss_equals_model(model, tiny_dataset, run_config, tmp_path):
    ckpt = train_checkpoint(model, tiny_dataset, run_config)
    out = tmp_path / "recs.csv"
    assert rec.main(["--checkpoint", ckpt, "--topk", "5", "--out", str(out), "--batch-size", "7",
                     "--export-embeddings", str(tmp_path / "emb")]) == 0
    frame = pd.read_csv(out, dtype={"user": str, "item": str})
    loaded = rec.load(ckpt)
    ds = loaded.dataset
    assert frame["user"].nunique() == ds.user_num - 1 and (frame.groupby("user").size() == 5).all()
    assert (frame.groupby("user")["rank"].apply(list) == pd.Series([[1, 2, 3, 4, 5]] * (ds.user_num - 1))
            .set_axis(frame.groupby("user").size().index)).all()
    # no training item is recommended; scores fall with rank and are the model's scores
    train = loaded.train_dataset.inter_feat
    seen = set(zip(ds.id2token(ds.uid_field, train[ds.uid_field]), ds.id2token(ds.iid_field, train[ds.iid_field])))
    assert not seen & set(zip(frame["user"], frame["item"]))
    assert (frame.groupby("user")["score"].diff().dropna() <= 1e-6).all()
    u, i = ds.token2id(ds.uid_field, list(frame["user"][:5])), ds.token2id(ds.iid_field, list(frame["item"][:5]))
    from recbole.data.interaction import Interaction

    with torch.no_grad():
        full = loaded.model.full_sort_predict(Interaction({ds.uid_field: torch.tensor(u[:1])})).view(-1)
    np.testing.assert_allclose(frame["score"][:5], full[i].numpy(), rtol=1e-5, atol=1e-6)

    # the exported vectors score as the model does, and the FAISS index finds the model's top-K
    emb = tmp_path / "emb"
    users, items = np.load(emb / "user.npy"), np.load(emb / "item.npy")
    user_ids = (emb / "user.ids").read_text().split()
    item_ids = np.array((emb / "item.ids").read_text().split())
    assert users.shape[0] == len(user_ids) == ds.user_num - 1 and items.shape[0] == len(item_ids) == ds.item_num - 1
    import faiss

    index = faiss.read_index(str(emb / "item.faiss"))
    sample = user_ids[:8]
    scores, hits = index.search(users[:8], 5)
    plain = rec.recommend(loaded, sample, topk=5, exclude_train=False)
    for r, user in enumerate(sample):
        mine = plain[plain["user"] == user]
        np.testing.assert_allclose(scores[r], mine["score"], rtol=1e-4, atol=1e-5)
        assert list(item_ids[hits[r]]) == list(mine["item"])


def test_cli_refuses_overwrite_and_unknown_users(tiny_dataset, run_config, tmp_path, capsys):
    ckpt = train_checkpoint("BPR", tiny_dataset, run_config)
    out = tmp_path / "recs.parquet"
    users = tmp_path / "users.txt"
    users.write_text("3\n5\n")
    assert rec.main(["--checkpoint", ckpt, "--users", str(users), "--topk", "3", "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert sorted(frame["user"].unique()) == ["3", "5"] and len(frame) == 6
    capsys.readouterr()
    assert rec.main(["--checkpoint", ckpt, "--topk", "3", "--out", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert rec.main(["--checkpoint", ckpt, "--topk", "4", "--out", str(out), "--force", "--keep-train"]) == 0
    again = pd.read_parquet(out)
    assert again["user"].nunique() > 2 and (again.groupby("user").size() == 4).all()
    users.write_text("3\nnobody\n")
    assert rec.main(["--checkpoint", ckpt, "--users", str(users), "--out", str(tmp_path / "x.csv")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith(f"error: --users {users}: line 2: user id 'nobody' is not in "
                                                     "dataset 'tiny'; its user ids are the user_id tokens of ")
    assert not (tmp_path / "x.csv").exists()


def test_keep_train_keeps_training_items(tiny_dataset, run_config):
    ckpt = train_checkpoint("BPR", tiny_dataset, run_config)
    loaded = rec.load(ckpt)
    ds = loaded.dataset
    n = ds.item_num - 1
    full = rec.recommend(loaded, ["1"], topk=n, exclude_train=False)
    masked = rec.recommend(loaded, ["1"], topk=n)
    n_train = int((loaded.train_dataset.inter_feat[ds.uid_field] == ds.token2id(ds.uid_field, "1")).sum())
    assert len(full) == n and len(masked) == n - n_train


def test_non_dot_model_says_so(tiny_dataset, run_config, tmp_path, capsys):
    ckpt = train_checkpoint("ItemKNNCBF", tiny_dataset, run_config)
    assert rec.main(["--checkpoint", ckpt, "--export-embeddings", str(tmp_path / "emb")]) == 2
    err = capsys.readouterr().err
    assert "ItemKNNCBF: its score is not a dot product" in err and not (tmp_path / "emb").exists()
    frame = rec.recommend(ckpt, topk=3)  # top-K works for it all the same
    assert len(frame) == 3 * (rec.load(ckpt).dataset.user_num - 1)


def test_similar_items_match_brute_force(tiny_dataset, run_config, capsys, tmp_path):
    from recbole_mm import similar

    ckpt = train_checkpoint("LightGCN", tiny_dataset, run_config)
    loaded = rec.load(ckpt)
    ds = loaded.dataset
    query = ["4", "17"]
    for features in (None, "text"):
        got = similar.similar_items(loaded, query, topk=6, features=features)
        if features is None:
            vectors = rec.scoring_embeddings(loaded)[1][1:]
        else:
            vectors = ds.item_features["text"][1:]
        normed = F.normalize(vectors.float(), dim=1)
        for q in query:
            row = ds.token2id(ds.iid_field, q) - 1
            sims = normed @ normed[row]
            sims[row] = -float("inf")
            best = torch.topk(sims, 6)
            mine = got[got["item"] == q]
            assert list(mine["similar"]) == list(ds.id2token(ds.iid_field, best.indices + 1))
            np.testing.assert_allclose(mine["score"], best.values.numpy(), rtol=1e-5, atol=1e-6)
    out = tmp_path / "sim.csv"
    assert similar.main(["--checkpoint", ckpt, "--items", "4", "--topk", "3", "--out", str(out)]) == 0
    assert len(pd.read_csv(out)) == 3
    assert similar.main(["--checkpoint", ckpt, "--items", "4", "nope", "--topk", "3"]) == 2
    assert "item id 'nope' is not in dataset 'tiny'" in capsys.readouterr().err
    assert similar.main(["--checkpoint", ckpt, "--items", "4", "--features", "audio"]) == 2
    assert "modality 'audio'" in capsys.readouterr().err
