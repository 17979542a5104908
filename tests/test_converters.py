"""Converters: exact round trip, inputs untouched, atomic output, --force, clear errors."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dataset_converters import lastfm, mmrec
from dataset_converters._common import ConversionError, k_core, random_user_split, run_cli

REPO = Path(__file__).resolve().parent.parent


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_mmrec_round_trip(tiny_mmrec, tmp_path):
    before = _digest(tiny_mmrec)
    out = Path(mmrec.convert(str(tiny_mmrec), str(tmp_path / "out")))
    assert _digest(tiny_mmrec) == before  # inputs untouched
    raw = pd.read_csv(tiny_mmrec / "tiny.inter", sep="\t")
    for k, split in enumerate(("train", "valid", "test")):
        got = pd.read_csv(out / f"tiny.{split}.inter", sep="\t")
        assert list(got.columns) == ["user_id:token", "item_id:token"]
        want = raw[raw.x_label == k][["userID", "itemID"]].to_numpy()
        np.testing.assert_array_equal(got.to_numpy(), want)
    for mod in ("text", "image"):
        assert (out / f"{mod}_feat.npy").read_bytes() == (tiny_mmrec / f"{mod}_feat.npy").read_bytes()
    assert not list(out.parent.glob(".*tmp*"))  # no staging leftovers


def test_mmrec_refuses_overwrite_without_force(tiny_mmrec, tmp_path, capsys):
    out_root = tmp_path / "out"
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(out_root)]) == 0
    marker = out_root / "tiny" / "tiny.train.inter"
    stamp = marker.read_bytes()
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(out_root)]) == 2
    assert "--force" in capsys.readouterr().err
    assert marker.read_bytes() == stamp
    (out_root / "tiny" / "stale.txt").write_text("old")
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(out_root), "--force"]) == 0
    assert not (out_root / "tiny" / "stale.txt").exists()


def test_mmrec_failure_leaves_existing_output(tiny_mmrec, tmp_path):
    out_root = tmp_path / "out"
    mmrec.convert(str(tiny_mmrec), str(out_root))
    before = _digest(out_root / "tiny")
    np.save(tiny_mmrec / "text_feat.npy", np.full((60, 8), np.nan, dtype=np.float32))
    with pytest.raises(ConversionError, match=r"text_feat.npy: row 0 contains NaN"):
        mmrec.convert(str(tiny_mmrec), str(out_root), force=True)
    assert _digest(out_root / "tiny") == before


@pytest.mark.parametrize("edit,message", [
    (lambda f: f.drop(columns=["x_label"]), r"tiny.inter: missing column\(s\) \['x_label'\]"),
    (lambda f: f.assign(x_label=f.x_label.where(f.index != 3, 7)), r"field 'x_label' row 4 .*value 7"),
    (lambda f: f.assign(itemID=f.itemID.astype(object).where(f.index != 5, "abc")), r"field 'itemID' row 6 .*'abc'"),
])
def test_mmrec_bad_inter(tiny_mmrec, tmp_path, edit, message):
    path = tiny_mmrec / "tiny.inter"
    edit(pd.read_csv(path, sep="\t")).to_csv(path, sep="\t", index=False)
    with pytest.raises(ConversionError, match=message):
        mmrec.convert(str(tiny_mmrec), str(tmp_path / "out"))


def test_mmrec_short_feature_file(tiny_mmrec, tmp_path):
    np.save(tiny_mmrec / "image_feat.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(ConversionError, match=r"image_feat.npy: wrong row count: 5 rows .* itemID 59"):
        mmrec.convert(str(tiny_mmrec), str(tmp_path / "out"))


def test_converter_help():
    for module in ("dataset_converters.mmrec", "dataset_converters.lastfm"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO)
        assert out.returncode == 0 and "--force" in out.stdout


def test_random_user_split_reproducible_and_proportional():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(50), 20)
    items = np.concatenate([rng.choice(500, 20, replace=False) for _ in range(50)])
    a = random_user_split(users, items, seed=7)
    b = random_user_split(users, items, seed=7)
    c = random_user_split(users, items, seed=8)
    for s in ("train", "valid", "test"):
        np.testing.assert_array_equal(a[s][1], b[s][1])
    assert not np.array_equal(a["test"][1], c["test"][1])
    assert [len(a[s][0]) for s in ("train", "valid", "test")] == [800, 100, 100]
    for u in range(50):  # per user 16 / 2 / 2
        assert (a["valid"][0] == u).sum() == 2 and (a["test"][0] == u).sum() == 2
    tiny = random_user_split(np.array([1, 1, 2]), np.array([5, 6, 7]))
    assert set(tiny["train"][0]) == {1, 2}  # every user keeps a training interaction


def test_k_core():
    users = np.array([1, 1, 1, 2, 2, 3])
    items = np.array([1, 2, 3, 1, 2, 1])
    u, i = k_core(users, items, 2, 2)
    assert sorted(zip(u.tolist(), i.tolist())) == [(1, 1), (1, 2), (2, 1), (2, 2)]


def _hetrec_raw(folder: Path):
    folder.mkdir()
    rows = [(u, a, 10) for u in range(1, 9) for a in range(1, 9) if (u + a) % 4 != 0]  # 6 per user: 4 / 1 / 1
    pd.DataFrame(rows, columns=["userID", "artistID", "weight"]).to_csv(folder / "user_artists.dat", sep="\t", index=False)
    pd.DataFrame({"tagID": [1, 2, 3], "tagValue": ["rock", "jazz", "indie"]}).to_csv(folder / "tags.dat", sep="\t", index=False)
    tagged = [(1, 1, 1), (2, 1, 3), (1, 2, 2), (3, 1, 1), (1, 3, 2), (1, 3, 3)]  # artist 4..8 untagged
    pd.DataFrame(tagged, columns=["userID", "artistID", "tagID"]).to_csv(
        folder / "user_taggedartists.dat", sep="\t", index=False)
    return rows


def test_lastfm_tag_text_from_assignments(tmp_path):
    _hetrec_raw(tmp_path / "raw")
    text = lastfm.artist_tag_text(str(tmp_path / "raw"))
    assert text.to_dict() == {1: "indie,rock", 2: "jazz", 3: "indie,jazz"}


def test_lastfm_random_split_with_text(tmp_path):
    rows = _hetrec_raw(tmp_path / "raw")
    before = _digest(tmp_path / "raw")
    out = Path(lastfm.convert(lastfm.build_parser().parse_args(
        [str(tmp_path / "raw"), str(tmp_path / "out"), "--min-user-inter", "1", "--min-item-inter", "1"])))
    assert _digest(tmp_path / "raw") == before
    splits = [pd.read_csv(out / f"lfm2k.{s}.inter", sep="\t") for s in ("train", "valid", "test")]
    assert sum(len(s) for s in splits) == len(rows)
    feats = np.load(out / "text_feat.npy")
    ids = (out / "text_feat.ids").read_text().split()
    assert ids == ["1", "2", "3"] and feats.shape == (3, 384)  # untagged artists get no row


def test_lastfm_split_from_must_match_interactions(tmp_path):
    _hetrec_raw(tmp_path / "raw")
    pd.DataFrame({"userID": [1, 99], "itemID": [1, 1], "x_label": [0, 2]}).to_csv(
        tmp_path / "split.inter", sep="\t", index=False)
    args = lastfm.build_parser().parse_args(
        [str(tmp_path / "raw"), str(tmp_path / "out"), "--split-from", str(tmp_path / "split.inter"), "--no-text"])
    with pytest.raises(ConversionError, match=r"split.inter: row 2: \(userID 99, itemID 1\) is not in .*user_artists.dat"):
        lastfm.convert(args)


def test_report_and_parser_helpers(capsys):
    import numpy as np

    from dataset_converters._common import converter_parser, report

    splits = {s: (np.array([1, 2]), np.array([5, 6])) for s in ("train", "valid", "test")}
    report("d", splits, "/out", {"text": "t.npy"}, also="items file d.items.jsonl")
    report("d", splits, "/out", {})
    report("d", splits, "/out")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "modalities: text; items file d.items.jsonl; written to /out"
    assert lines[3] == "modalities: none; written to /out" and lines[5] == "written to /out"
    assert lines[0] == "d: 2 users x 2 items; train 2 / valid 2 / test 2 interactions"
    parser = converter_parser("dataset_converters.x", "First line.\n\nExamples:\n  keep   this layout")
    assert parser.prog == "python -m dataset_converters.x" and parser.description == "First line."
    assert "  keep   this layout" in parser.format_help()
