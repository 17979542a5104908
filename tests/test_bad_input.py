"""Bad input: every case ends in ONE line naming the file, field and row or id (``error: ...`` on
stderr, exit status 2 from the CLIs); nothing is written, nothing already there is lost.

Table of bad inputs and their messages (``X`` stands for the path or value at fault):

| # | bad input | where | message (one line) |
|---|---|---|---|
| 1 | repeated (user, item) row | mmrec, generic, lastfm/amazon `--split-from`, diffmm | `X.inter: (user 3, item 7) is repeated: row 5 (train) and row 9 (train) (1 duplicate rows, 0 pairs in two splits); remove the repeats or pass --dedupe to drop them` |
| 1 | one (user, item) pair in two splits | same converters | `...: (user 3, item 7) is in two splits: row 5 (train) and row 40 (test) (...)`; diffmm: `... trnMat.pkl (train) and .../tstMat.pkl (test)` |
| 1 | `--dedupe` | same converters | `--dedupe: dropped 2 repeated (user, item) interactions (1 duplicate rows, 1 pairs in two splits)` (kept: first row of the earliest split) |
| 2 | empty valid or test split (converter) | every converter | `X: the test split is empty (train 324, valid 80, test 0 interactions); every split needs at least one interaction` |
| 2 | empty train/valid/test split (run) | `data_preparation`, feature_quality | `dataset 'tiny' (DIR): the test split is empty (DIR/tiny.test.inter has no interactions after loading and filtering); ...` |
| 3 | header-only interactions (converter) | every converter | `X.inter: no interactions (the file holds only a header)` |
| 3 | a filter removes everything (converter) | generic/amazon `--k-core`, `--min-rating`, lastfm k-core | `X.csv: --k-core 50 removed every interaction; nothing is left to convert` |
| 3 | header-only .inter files (run) | `MultimodalDataset` | `dataset 'tiny' (DIR): tiny.train.inter, tiny.valid.inter, tiny.test.inter: no interactions (only a header), so no users or items` |
| 3 | a RecBole filter removes everything (run) | `MultimodalDataset` | `dataset 'flat' (DIR): the filter user_inter_num_interval='[100,inf)', item_inter_num_interval=... removed all 444 interactions; relax it` |
| 4 | 0 % coverage (string ids, .npy without .ids) | generic | `--feature image=X.npy: 0% coverage: none of its 3 rows (keyed by row number (no X.ids); e.g. 0, 1, 2) is an item of X.csv (e.g. a, b, c)` |
| 4 | 0 % coverage (loader, any policy) | `fill_missing` | `modality 'text': 0% coverage: none of the dataset's 3 items has a row in X.npy (rows keyed by ...); fix the ids or leave the modality out (use_modalities)` |
| 4 | empty .ids file | loader, generic | `id file X.ids: empty (no item ids), so no feature row belongs to an item` |
| 5 | a second writer of one output folder (with or without --force) | `staged_output_dir` | `output DIR is being written by another process: lock DIR.lock is held (pid N on HOST since T[; process N is no longer running, so the lock is stale]); if no converter is writing it, remove the lock: rm DIR.lock` |
| 5 | output appeared while converting (no --force) | `staged_output_dir` | `output DIR already exists; pass --force to overwrite it` (checked again at publish) |
| 6 | `topk` larger than the item count | `check_against_dataset` | `config key 'topk' asks for the top 50 items, but dataset 'few' (DIR) has only 31 items; set topk to values <= 31` |
| 7 | `embedding_size` 0 / 16.5 / 1e11 | `check_config` | `config key 'embedding_size' must be a positive integer, got 0` / `... is 1e+11, more than the sane maximum 65536` |
| 7 | `knn_k` < 1 | `check_config` | `config key 'knn_k' must be a positive integer, got 0` |
| 7 | `knn_k` >= item count | `check_against_dataset` | warning: `config key 'knn_k' is 60 but dataset 'tiny' (DIR) has 60 items: every item is a neighbour of every other (a complete graph, no selection); lower knn_k` |
| 7 | feature_quality `--k 0` | feature_quality | `--k (item-CF neighbours) must be a positive integer, got 0` |
| 8 | `.gz` that is no gzip / is truncated | amazon | `X.json.gz: not a gzip file (...); decompress it or drop the .gz suffix` / `X.json.gz: truncated: the compressed data ends after line N (...)` |
| 8 | truncated / text / object-dtype `.npy` | diffmm (all converters, loader) | `modality 'image' file X.npy: cannot be read as a .npy array (...)` / `...: expected a real numeric array, got dtype <U1` |
| 9 | feature_quality on an empty split / without modalities | feature_quality | the empty-split message above / `dataset 'ido' (DIR) has no item modalities to score: list them under `modalities:` in its yaml, or pass --add NAME=FILE` |
| 10 | loader and config errors (missing modality file, unknown `use_modalities`, bad id file, bad `missing_modality` / `test_mask`, malformed `--modalities`, ID-only data for a feature model, stale stage-1 file) | run_recbole_mm.py, run_hyper.py, `python -m` CLIs | the loader's message as one line `error: ...`, exit 2, no traceback (e.g. `error: config key 'missing_modality' must be one of ['mean', 'zero', 'neighbour', 'error'], got 'median'`) |
| 11 | `--use_modalities=[]` | `check_config` | `config key 'use_modalities' is an empty list: name the modalities to use, or leave it unset to use all of the dataset's modalities` |
| 11 | output root is a file / not writable | `staged_output_dir` | `output root DIR: DIR is a file, not a folder` / `output root DIR is not writable` (or `... is not writable (Read-only file system)` when the lock cannot be created) |
| 11 | NaN/inf or non-numeric feature values | every converter | `X.npy: row 2 (item id 'c') contains NaN or inf (1 bad rows)` / `X.csv: field 'f0' row 1 (item a): not a number` |
| 11 | float64 value that overflows float32 | converters, loader | `X.npy: row 3 has value 1e+300, which overflows float32 (largest 3.403e+38; 1 such rows)` |
| 12 | users only in valid/test | `check_splits` | warning: `dataset 'tiny': 1 of the 41 users in the valid/test splits have no training interaction (e.g. user ids 999); they are ranked by untrained embeddings` |
"""

import gzip
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dataset_converters import amazon, diffmm, generic, lastfm, mmrec
from dataset_converters._common import ConversionError, run_cli
from recbole_mm.checks import ConfigError
from recbole_mm.cli import run_main
from recbole_mm.config import Config
from recbole_mm.data import create_dataset, data_preparation
from recbole_mm.data.features import FeatureError, ModalitySpec, fill_missing
from recbole_mm.io import staged_output_dir
from tests.conftest import FAST, make_mmrec_folder

REPO = Path(__file__).resolve().parent.parent


def _config(data_path, name="tiny", model="VBPR", **overrides):
    return Config(model=model, dataset=name, config_dict={"data_path": str(data_path), **FAST, **overrides})


def _load(data_path, name="tiny", model="VBPR", **overrides):
    config = _config(data_path, name, model, **overrides)
    return config, create_dataset(config)


def _header_only(path):
    path = Path(path)
    path.write_text(path.read_text().splitlines()[0] + "\n")


def _edit_inter(folder, name, edit):
    path = Path(folder) / f"{name}.inter"
    edit(pd.read_csv(path, sep="\t")).to_csv(path, sep="\t", index=False)


def _cli(monkeypatch, capsys, main, args, prog="run_recbole_mm.py"):
    """``run_main``-style call of a CLI in-process (RecBole's Config also reads sys.argv)."""
    monkeypatch.setattr(sys, "argv", [prog, *args])
    code = main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in err and len(errors) == 1, err[-3000:]
    return code, errors[0]


# -- 1. repeated interactions ------------------------------------------------------------------
def test_mmrec_repeated_row_and_pair_in_two_splits(tiny_mmrec, tmp_path, capsys):
    frame = pd.read_csv(tiny_mmrec / "tiny.inter", sep="\t")
    u, i = frame.loc[4, ["userID", "itemID"]]
    _edit_inter(tiny_mmrec, "tiny", lambda f: pd.concat([f, f.iloc[[4]]], ignore_index=True))  # same split
    with pytest.raises(ConversionError, match=rf"tiny.inter: \(user {u}, item {i}\) is repeated: row 5 \(train\) "
                       rf"and row {len(frame) + 1} \(train\) \(1 duplicate rows, 0 pairs in two splits\).*--dedupe"):
        mmrec.convert(str(tiny_mmrec), str(tmp_path / "out"))
    leak = frame.iloc[[4]].assign(x_label=2)  # the same pair again in test
    _edit_inter(tiny_mmrec, "tiny", lambda f: pd.concat([f, leak], ignore_index=True))
    with pytest.raises(ConversionError, match=rf"is in two splits: row 5 \(train\) and row {len(frame) + 2} \(test\) "
                       r"\(1 duplicate rows, 1 pairs in two splits\)"):
        mmrec.convert(str(tiny_mmrec), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # --dedupe keeps the first row of the earliest split and says what it dropped
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(tmp_path / "out"), "--dedupe"]) == 0
    assert "--dedupe: dropped 2 repeated (user, item) interactions (1 duplicate rows, 1 pairs in two splits)" \
        in capsys.readouterr().out
    splits = [pd.read_csv(tmp_path / "out" / "tiny" / f"tiny.{s}.inter", sep="\t") for s in ("train", "valid", "test")]
    assert sum(map(len, splits)) == len(frame)
    assert not ((splits[2]["user_id:token"] == u) & (splits[2]["item_id:token"] == i)).any()


def test_generic_repeats_with_and_without_split_column(tmp_path, capsys):
    rows = [(f"u{u}", f"i{k}", "train" if k < 6 else ("valid" if k == 6 else "test")) for u in range(2) for k in range(8)]
    frame = pd.DataFrame(rows, columns=["user", "item", "split"])
    pd.concat([frame, frame.iloc[[1]].assign(split="test")]).to_csv(tmp_path / "leak.csv", index=False)
    args = ["--name", "g", "--split-column", "split"]
    assert run_cli(generic.main, [str(tmp_path / "leak.csv"), str(tmp_path / "o1"), *args]) == 2
    assert "leak.csv: (user u0, item i1) is in two splits: row 2 (train) and row 17 (test)" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()
    # without a split column a repeated pair is refused too (it used to be dropped silently)
    pd.concat([frame, frame.iloc[[3]]]).drop(columns="split").to_csv(tmp_path / "dup.csv", index=False)
    assert run_cli(generic.main, [str(tmp_path / "dup.csv"), str(tmp_path / "o2"), "--name", "g"]) == 2
    assert "(user u0, item i3) is repeated: row 4 (train) and row 17 (train)" in capsys.readouterr().err
    assert run_cli(generic.main, [str(tmp_path / "dup.csv"), str(tmp_path / "o2"), "--name", "g", "--dedupe"]) == 0
    assert "dropped 1 repeated" in capsys.readouterr().out


def _pickle(path, matrix):
    with open(path, "wb") as fh:
        pickle.dump(matrix, fh)


def _diffmm_folder(tmp_path, feat=None):
    src = tmp_path / "diffmm"
    src.mkdir(exist_ok=True)
    train = np.zeros((6, 8), np.float32)
    test = np.zeros((6, 8), np.float32)
    for u in range(6):
        train[u, [(u + k) % 8 for k in range(5)]] = 1
        test[u, (u + 6) % 8] = 1
    _pickle(src / "trnMat.pkl", sp.csr_matrix(train))
    _pickle(src / "tstMat.pkl", sp.csr_matrix(test))
    np.save(src / "image_feat.npy", np.ones((8, 3), np.float32) if feat is None else feat)
    return src, train, test


def test_diffmm_train_test_overlap_shared_check(tmp_path, capsys):
    src, train, test = _diffmm_folder(tmp_path)
    test[2, 2] = 1  # (2, 2) is also a training interaction
    _pickle(src / "tstMat.pkl", sp.csr_matrix(test))
    assert run_cli(diffmm.main, [str(src), str(tmp_path / "out"), "--name", "dm", "--valid-from-test"]) == 2
    err = capsys.readouterr().err
    assert "(user 2, item 2) is in two splits:" in err and "trnMat.pkl (train) and" in err and "tstMat.pkl (test)" in err
    assert run_cli(diffmm.main, [str(src), str(tmp_path / "out"), "--name", "dm", "--valid-from-test", "--dedupe"]) == 0
    got = pd.read_csv(tmp_path / "out" / "dm" / "dm.test.inter", sep="\t")
    assert len(got) == 6 and not ((got["user_id:token"] == 2) & (got["item_id:token"] == 2)).any()


def test_lastfm_and_amazon_split_from_repeats(tmp_path, capsys):
    from tests.test_converters import _hetrec_raw
    from tests.test_converters_more import _amazon_fixture

    _hetrec_raw(tmp_path / "raw")
    pd.DataFrame({"userID": [1, 1, 2], "itemID": [1, 1, 1], "x_label": [0, 2, 1]}).to_csv(
        tmp_path / "split.inter", sep="\t", index=False)
    args = [str(tmp_path / "raw"), str(tmp_path / "o"), "--split-from", str(tmp_path / "split.inter"), "--no-text"]
    assert run_cli(lastfm.main, args) == 2
    assert "split.inter: (user 1, item 1) is in two splits: row 1 (train) and row 2 (test)" in capsys.readouterr().err
    rpath, mpath = _amazon_fixture(tmp_path)
    mm = tmp_path / "mm"
    mm.mkdir()
    pd.DataFrame({"userID": [0, 0], "itemID": [1, 1], "x_label": [0, 0]}).to_csv(mm / "baby.inter", sep="\t", index=False)
    pd.DataFrame({"asin": ["B01", "B02"], "itemID": [0, 1]}).to_csv(mm / "i_id_mapping.csv", sep="\t", index=False)
    pd.DataFrame({"user_id": ["U00"], "userID": [0]}).to_csv(mm / "u_id_mapping.csv", sep="\t", index=False)
    from recbole_mm.cli import run_main as rm

    code = rm(amazon.main, [rpath, mpath, str(tmp_path / "a"), "--name", "baby", "--split-from", str(mm), "--no-text"])
    err = capsys.readouterr().err
    assert code == 2 and "baby.inter: (user 0, item 1) is repeated: row 1 (train) and row 2 (train)" in err, err


# -- 2./3. empty splits, empty datasets -----------------------------------------------------------
def test_converters_refuse_empty_split_and_empty_dataset(tiny_mmrec, tmp_path, capsys):
    _edit_inter(tiny_mmrec, "tiny", lambda f: f[f.x_label != 2])
    with pytest.raises(ConversionError, match=r"tiny.inter: the test split is empty \(train \d+, valid \d+, test 0"):
        mmrec.convert(str(tiny_mmrec), str(tmp_path / "out"))
    _header_only(tiny_mmrec / "tiny.inter")
    with pytest.raises(ConversionError, match=r"tiny.inter: no interactions \(the file holds only a header\)"):
        mmrec.convert(str(tiny_mmrec), str(tmp_path / "out"))
    pd.DataFrame({"user": ["u1", "u1", "u2"], "item": ["a", "b", "a"]}).to_csv(tmp_path / "i.csv", index=False)
    assert run_cli(generic.main, [str(tmp_path / "i.csv"), str(tmp_path / "o"), "--name", "g", "--k-core", "50"]) == 2
    assert "i.csv: --k-core 50 removed every interaction" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("split", ["valid", "test"])
def test_run_refuses_empty_split(tiny_dataset, split):
    data_path, name = tiny_dataset
    _header_only(Path(data_path) / name / f"{name}.{split}.inter")
    config, dataset = _load(data_path)
    with pytest.raises(ValueError, match=rf"dataset 'tiny' .*: the {split} split is empty \(.*tiny.{split}.inter "
                                         r"has no interactions"):
        data_preparation(config, dataset)


def test_run_refuses_a_dataset_without_interactions(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    for split in ("train", "valid", "test"):
        _header_only(Path(data_path) / name / f"{name}.{split}.inter")
    with pytest.raises(ValueError, match=r"tiny.train.inter, tiny.valid.inter, tiny.test.inter: no interactions "
                                         r"\(only a header\)"):
        _load(data_path)
    # a flat .inter (RecBole filters it): the filter that removed the last interaction is named
    flat = tmp_path / "flat" / "flat"
    flat.mkdir(parents=True)
    pd.DataFrame({"user_id:token": np.repeat(np.arange(10), 5), "item_id:token": np.tile(np.arange(5), 10)}).to_csv(
        flat / "flat.inter", sep="\t", index=False)
    with pytest.raises(ValueError, match=r"dataset 'flat' .*: the filter user_inter_num_interval='\[100,inf\)'.* "
                                         r"removed all 50 interactions"):
        _load(tmp_path / "flat", "flat", model="BPR", user_inter_num_interval="[100,inf)")


# -- 4. 0 % coverage ---------------------------------------------------------------------------------
def test_zero_coverage_in_converter_and_loader(tmp_path, tiny_dataset, capsys):
    rows = [(f"u{u}", it, "train" if k < 2 else ("valid" if k == 2 else "test"))
            for u in range(2) for k, it in enumerate("abcd")]
    pd.DataFrame(rows, columns=["user", "item", "split"]).to_csv(tmp_path / "i.csv", index=False)
    np.save(tmp_path / "img.npy", np.ones((3, 2), np.float32))  # no img.ids: row r would be item "r"
    args = [str(tmp_path / "i.csv"), str(tmp_path / "o"), "--name", "g", "--split-column", "split"]
    assert run_cli(generic.main, args + ["--feature", f"image={tmp_path / 'img.npy'}"]) == 2
    assert "img.npy: 0% coverage: none of its 3 rows (keyed by row number (no img.ids)" in capsys.readouterr().err
    (tmp_path / "img.ids").write_text("")
    assert run_cli(generic.main, args + ["--feature", f"image={tmp_path / 'img.npy'}"]) == 2
    assert "img.ids: empty (no item ids)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # the loader: an empty id file, and fill_missing over zero present rows under every policy
    data_path, name = tiny_dataset
    (Path(data_path) / name / "text_feat.ids").write_text("")
    with pytest.raises(FeatureError, match=r"text_feat.ids: empty \(no item ids\)"):
        _load(data_path)
    spec = ModalitySpec("text", str(tmp_path / "t.npy"))
    for policy in ("mean", "zero", "neighbour", "error"):
        with pytest.raises(FeatureError, match=r"modality 'text': 0% coverage: none of the dataset's 3 items"):
            fill_missing(np.zeros((4, 2), np.float32), np.zeros(4, bool), policy, spec, np.array(["[PAD]", *"abc"]))


# -- 5. two writers of one output ------------------------------------------------------------------
def test_second_writer_fails_while_the_first_holds_the_lock(tiny_mmrec, tmp_path, capsys):
    out_root = tmp_path / "out"
    final = out_root / "tiny"
    with staged_output_dir(str(final), force=True) as stage:  # writer 1, mid-way
        (Path(stage) / "mine.txt").write_text("writer 1")
        for force in ([], ["--force"]):
            assert run_cli(mmrec.main, [str(tiny_mmrec), str(out_root), *force]) == 2
            err = capsys.readouterr().err
            assert f"output {final} is being written by another process: lock {final}.lock is held (pid {os.getpid()}" \
                in err and f"remove the lock: rm {final}.lock" in err
    assert (final / "mine.txt").read_text() == "writer 1"  # writer 1 published, not replaced
    assert not Path(f"{final}.lock").exists()
    # a lock left by a killed writer is called stale
    Path(f"{final}.lock").write_text(f"999999999 {os.uname().nodename} 2020-01-01T00:00:00\n")
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(out_root), "--force"]) == 2
    assert "process 999999999 is no longer running, so the lock is stale" in capsys.readouterr().err
    os.unlink(f"{final}.lock")
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(out_root), "--force"]) == 0
    # without --force, a folder that appears while converting (a writer that takes no lock) is kept
    other = tmp_path / "o2" / "tiny"
    with pytest.raises(FileExistsError, match="already exists"):
        with staged_output_dir(str(other)):
            other.mkdir(parents=True)
            (other / "theirs.txt").write_text("x")
    assert [p.name for p in other.iterdir()] == ["theirs.txt"]


def test_two_converter_processes(tiny_mmrec, tmp_path):
    """Two real processes: one holds the lock (a converter paused inside its staged output), the other fails."""
    holder = (f"import sys, time; sys.path.insert(0, {str(REPO)!r})\n"
              "from recbole_mm.io import staged_output_dir\n"
              f"with staged_output_dir({str(tmp_path / 'out' / 'tiny')!r}, force=True):\n"
              "    print('held', flush=True); time.sleep(60)\n")
    first = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "held"
        out = subprocess.run([sys.executable, "-m", "dataset_converters.mmrec", str(tiny_mmrec), str(tmp_path / "out"),
                              "--force"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith("error: output ") and "is being written by another process" in out.stderr
    finally:
        first.kill()
        first.wait()


# -- 6./7. config values --------------------------------------------------------------------------------
def test_topk_larger_than_the_item_count(tmp_path):
    mmrec.convert(str(make_mmrec_folder(tmp_path / "raw", name="few", n_items=31)), str(tmp_path / "data"))
    config, dataset = _load(tmp_path / "data", "few", topk=[10, 50])
    with pytest.raises(ConfigError, match=r"config key 'topk' asks for the top 50 items, but dataset 'few' .* has "
                                          r"only 31 items"):
        data_preparation(config, dataset)


@pytest.mark.parametrize("key,value,message", [
    ("embedding_size", 0, r"config key 'embedding_size' must be a positive integer, got 0"),
    ("embedding_size", 16.5, r"config key 'embedding_size' must be a positive integer, got 16.5"),
    ("embedding_size", 1e11, r"config key 'embedding_size' is 1e\+11, more than the sane maximum 65536"),
    ("feature_embedding_size", -3, r"config key 'feature_embedding_size' must be a positive integer, got -3"),
    ("knn_k", 0, r"config key 'knn_k' must be a positive integer, got 0"),
    ("use_modalities", [], r"config key 'use_modalities' is an empty list"),
    ("missing_modality", "median", r"config key 'missing_modality' must be one of \['mean', 'zero', 'neighbour', "
                                   r"'error'\], got 'median'"),
    ("test_mask", "everything", r"config key 'test_mask' must be one of \['train_valid', 'train'\]"),
])
def test_config_checked_up_front(tiny_dataset, key, value, message):
    with pytest.raises(ConfigError, match=message):
        _config(tiny_dataset[0], **{key: value})


def test_knn_k_at_least_the_item_count_warns(tiny_dataset, caplog):
    config, dataset = _load(tiny_dataset[0], model="FREEDOM", knn_k=60)
    with caplog.at_level(logging.WARNING):
        data_preparation(config, dataset)
    assert "config key 'knn_k' is 60 but dataset 'tiny'" in caplog.text and "a complete graph" in caplog.text


# -- 8. unreadable inputs -------------------------------------------------------------------------------
def test_amazon_bad_gzip(tmp_path, capsys):
    from tests.test_converters_more import _amazon_fixture

    rpath, mpath = _amazon_fixture(tmp_path)
    plain = tmp_path / "plain.json.gz"
    plain.write_text('{"reviewerID": "U1", "asin": "B1"}\n')
    data = Path(rpath).read_bytes()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    for path, message in ((plain, "plain.json.gz: not a gzip file"), (cut, "cut.json.gz: truncated: the compressed "
                                                                             "data ends after line")):
        assert run_cli(amazon.main, [str(path), mpath, str(tmp_path / "o"), "--name", "x", "--no-text"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path}/{message}") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("write,message", [
    (lambda p: p.write_bytes(np.lib.format.magic(1, 0) + b"{'descr': '<f4', 'fortran_order': False, 'shape': (8, 3), }"
                             .ljust(118) + b"\n" + b"\0" * 10), "cannot be read as a .npy array"),  # truncated
    (lambda p: p.write_text("1 2 3\n"), "cannot be read as a .npy array"),
    (lambda p: np.save(p, np.array([[{"a": 1}]] * 8, dtype=object)), "cannot be read as a .npy array"),
    (lambda p: np.save(p, np.full((8, 3), "x")), "expected a real numeric array, got dtype <U1"),
    (lambda p: np.save(p, np.where(np.eye(8, 3) > 0, np.nan, 1.0)), "image_feat.npy: row 0 contains NaN or inf"),
    (lambda p: np.save(p, np.where(np.eye(8, 3, -3) > 0, 1e300, 1.0)),
     r"image_feat.npy: row 3 has value 1e+300, which overflows float32"),
])
def test_diffmm_feature_files_checked_in_full(tmp_path, capsys, write, message):
    src, _, _ = _diffmm_folder(tmp_path)
    write(src / "image_feat.npy")
    assert run_cli(diffmm.main, [str(src), str(tmp_path / "out"), "--name", "dm", "--valid-from-test"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "image_feat.npy" in err, err
    assert not (tmp_path / "out").exists()


# -- 9. feature_quality -----------------------------------------------------------------------------------
def test_feature_quality_empty_split_no_modalities_bad_k(tiny_dataset, tmp_path, monkeypatch, capsys):
    from recbole_mm.feature_quality import main

    data_path, name = tiny_dataset
    base = ["--dataset", name, "--data_path", data_path]
    assert _cli(monkeypatch, capsys, lambda a: run_main(main, a), base + ["--k", "0"])[1] == \
        "error: --k (item-CF neighbours) must be a positive integer, got 0"
    _header_only(Path(data_path) / name / f"{name}.test.inter")
    code, line = _cli(monkeypatch, capsys, lambda a: run_main(main, a), base)
    assert code == 2 and "the test split is empty" in line
    mmrec.convert(str(make_mmrec_folder(tmp_path / "raw2", name="ido", dims=())), str(tmp_path / "d2"))
    code, line = _cli(monkeypatch, capsys, lambda a: run_main(main, a), ["--dataset", "ido", "--data_path",
                                                                          str(tmp_path / "d2")])
    assert code == 2 and "dataset 'ido'" in line and "has no item modalities to score" in line


# -- 10. every loader/config error reaches the CLI user as one line -------------------------------------
def _stale_stage1(folder):
    np.save(folder / "fused.npy", np.ones((60, 4), np.float32))
    (folder / "fused.ids").write_text("".join(f"{i}\n" for i in range(60)))
    (folder / "fused.json").write_text(json.dumps({"encoder": "ica", "modalities": ["audio"], "settings": {}}))
    return ["--encoder_file=fused.npy"]


@pytest.mark.parametrize("case,expected", [
    ("missing file", r"modality 'gone' file .*gone.npy: file not found"),
    ("unknown use_modalities", r"use_modalities names \['audio'\], but dataset 'tiny' has modalities"),
    ("bad id file", r"id file .*text_feat.ids: duplicate item id '1' on rows 0 and 1"),
    ("missing_modality", r"config key 'missing_modality' must be one of"),
    ("test_mask", r"config key 'test_mask' must be one of"),
    ("malformed --modalities", r"config key 'modalities' must map a modality name to a file, got 'text'"),
    ("empty use_modalities", r"config key 'use_modalities' is an empty list"),
    ("ID-only data", r"VBPR needs item modalities, but dataset 'ido' has none"),
    ("stale stage-1 file", r"fused.json: field 'modalities' is \['audio'\], but this run's stage 1 would use"),
    ("topk", r"config key 'topk' asks for the top 100 items"),
    ("empty valid split", r"the valid split is empty"),
])
def test_run_recbole_mm_errors_are_one_line(tiny_dataset, tmp_path, monkeypatch, capsys, case, expected):
    from recbole_mm.quick_start import main

    data_path, name = tiny_dataset
    folder = Path(data_path) / name
    args = {"missing file": ["--modalities={'gone': 'gone.npy'}"],
            "unknown use_modalities": ["--use_modalities=['audio']"],
            "missing_modality": ["--missing_modality=median"], "test_mask": ["--test_mask=everything"],
            "malformed --modalities": ["--modalities=text"], "empty use_modalities": ["--use_modalities=[]"],
            "topk": ["--topk=[10,100]"]}.get(case, [])
    if case == "bad id file":
        (folder / "text_feat.ids").write_text("1\n1\n" + "".join(f"{i}\n" for i in range(2, 60)))
    if case == "ID-only data":
        mmrec.convert(str(make_mmrec_folder(tmp_path / "raw2", name="ido", dims=())), str(tmp_path / "d2"))
        data_path, name = str(tmp_path / "d2"), "ido"
    if case == "stale stage-1 file":
        args = _stale_stage1(folder)
    if case == "empty valid split":
        _header_only(folder / f"{name}.valid.inter")
    model = "AlignRec" if case == "stale stage-1 file" else "VBPR"
    args = [f"--model={model}", f"--dataset={name}", f"--data_path={data_path}", "--epochs=1", "--show_progress=False",
            "--state=WARNING", *args]
    code, line = _cli(monkeypatch, capsys, main, args)
    assert code == 2
    assert __import__("re").search(expected, line), line


def test_other_clis_report_one_line(tiny_dataset, tmp_path, monkeypatch, capsys):
    from recbole_mm import hyper, pretrain
    from recbole_mm.encoders.__main__ import main as encoders

    data_path, name = tiny_dataset
    bad = [f"--dataset={name}", f"--data_path={data_path}", "--use_modalities=['audio']", "--state=WARNING"]
    params = tmp_path / "hyper.test"
    params.write_text("learning_rate choice [0.01]\n")
    code, line = _cli(monkeypatch, capsys, hyper.main, ["--model=VBPR", f"--params_file={params}", *bad], "run_hyper.py")
    assert code == 2 and "use_modalities names ['audio']" in line
    code, line = _cli(monkeypatch, capsys, lambda a: run_main(pretrain.main, a),
                      ["--dataset", name, "--data_path", data_path, "--use_modalities=['audio']"], "pretrain")
    assert code == 2 and "use_modalities names ['audio']" in line
    code, line = _cli(monkeypatch, capsys, encoders, ["text", "--items", str(tmp_path / "none.csv"), "--output",
                                                       str(tmp_path / "f.npy")], "encoders")
    assert code == 2 and "none.csv" in line


def test_real_scripts_print_one_line_and_exit_2(tiny_dataset, tmp_path):
    """The real entry points: a config error before logging starts is the only stderr line; a loader
    error after RecBole's log comes last, once, without a traceback."""
    data_path, name = tiny_dataset
    base = [sys.executable, str(REPO / "run_recbole_mm.py"), f"--dataset={name}", f"--data_path={data_path}"]
    out = subprocess.run(base + ["--embedding_size=0"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert (out.returncode, out.stderr) == (2, "error: config key 'embedding_size' must be a positive integer, got 0\n")
    out = subprocess.run(base + ["--modalities={'gone': 'gone.npy'}"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert [line for line in lines if "gone.npy" in line and "not found" in line] == [lines[-1]]
    assert lines[-1].startswith("error: modality 'gone' file ")


# -- 11. output roots, non-finite and overflowing features -----------------------------------------------
def test_output_root_not_a_folder_or_not_writable(tiny_mmrec, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"error: output root {tmp_path / 'file'}: {tmp_path / 'file'} is a file, not a folder\n"
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(tmp_path / "file" / "deeper")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # not writable (simulated: the tests may run as root, who may write anywhere)
    import recbole_mm.io as io

    monkeypatch.setattr(io.os, "access", lambda path, mode: False)
    assert run_cli(mmrec.main, [str(tiny_mmrec), str(tmp_path / "ro")]) == 2
    assert capsys.readouterr().err == f"error: output root {tmp_path / 'ro'} is not writable\n"


def test_non_finite_and_non_numeric_features_refused_at_conversion(tmp_path, capsys):
    rows = [(f"u{u}", it, "train" if k < 2 else ("valid" if k == 2 else "test"))
            for u in range(2) for k, it in enumerate("abcd")]
    pd.DataFrame(rows, columns=["user", "item", "split"]).to_csv(tmp_path / "i.csv", index=False)
    args = [str(tmp_path / "i.csv"), str(tmp_path / "o"), "--name", "g", "--split-column", "split", "--feature"]
    np.save(tmp_path / "img.npy", np.array([[1.0], [2.0], [np.inf]]))
    (tmp_path / "img.ids").write_text("a\nb\nc\n")
    assert run_cli(generic.main, args + [f"image={tmp_path / 'img.npy'}"]) == 2
    assert "img.npy: row 2 (item id 'c') contains NaN or inf (1 bad rows)" in capsys.readouterr().err
    pd.DataFrame({"item": ["a", "b"], "f0": ["1.0", "inf"]}).to_csv(tmp_path / "t.csv", index=False)
    assert run_cli(generic.main, args + [f"text={tmp_path / 't.csv'}"]) == 2
    assert "t.csv: row 2 (item id 'b') contains NaN or inf" in capsys.readouterr().err
    pd.DataFrame({"item": ["a", "b"], "f0": ["1.0", "abc"]}).to_csv(tmp_path / "t.csv", index=False)
    assert run_cli(generic.main, args + [f"text={tmp_path / 't.csv'}"]) == 2
    assert "t.csv: field 'f0' row 2 (item b): not a number" in capsys.readouterr().err
    np.save(tmp_path / "img.npy", np.array([[1.0], [-1e300], [3.0]]))
    assert run_cli(generic.main, args + [f"image={tmp_path / 'img.npy'}"]) == 2
    assert "img.npy: row 1 (item id 'b') has value -1e+300, which overflows float32" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_float32_overflow_named_by_mmrec_and_the_loader(tiny_mmrec, tiny_dataset, tmp_path):
    feat = np.load(tiny_mmrec / "text_feat.npy").astype(np.float64)
    feat[7, 2] = 1e300
    np.save(tiny_mmrec / "text_feat.npy", feat)
    with pytest.raises(ConversionError, match=r"text_feat.npy: row 7 has value 1e\+300, which overflows float32"):
        mmrec.convert(str(tiny_mmrec), str(tmp_path / "out2"))
    data_path, name = tiny_dataset
    np.save(Path(data_path) / name / "text_feat.npy", feat)
    with pytest.raises(FeatureError, match=r"modality 'text': .*text_feat.npy row 7 \(item id '7'\) has value 1e\+300, "
                                           r"which overflows float32"):
        _load(data_path)


# -- 12. users seen only at evaluation -------------------------------------------------------------------
def test_users_only_in_valid_or_test_warn(tiny_dataset, caplog):
    data_path, name = tiny_dataset
    with open(Path(data_path) / name / f"{name}.test.inter", "a") as fh:
        fh.write("999\t3\n")
    config, dataset = _load(data_path)
    with caplog.at_level(logging.WARNING):
        data_preparation(config, dataset)
    assert "dataset 'tiny': 1 of the 41 users in the valid/test splits have no training interaction (e.g. user " \
           "ids 999)" in caplog.text
