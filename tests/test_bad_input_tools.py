"""Bad input to the tools run after training (``recbole_mm.recommend``, ``.similar``, ``.plot``,
``.evaluation``, ``benchmarks/leaderboard.py``): ONE line ``error: ...`` naming the file, field and
row or id, exit status 2, nothing written and nothing already there overwritten.

| tool | bad input | message (one line; ``X`` is the path at fault) |
|---|---|---|
| recommend, similar, plot, evaluation | checkpoint missing / a folder | `--checkpoint X: no such file` / `--checkpoint X: is a folder, not a checkpoint file` (`--model_file` for evaluation) |
| same | a file that is not a checkpoint | `--checkpoint X: not a checkpoint saved by a recbole_mm/RecBole run (torch.load: ...)` / `(no 'config' / 'state_dict'; its keys: ['a'])` |
| recommend, similar | K <= 0 | `--topk must be a positive integer, got 0` (also `--batch-size`) |
| recommend | unknown user id in `--users` | `--users X: line 3: user id 'nobody' is not in dataset 'tiny' (and 1 more); the dataset's user ids (e.g. '0', '1', '2') are mapped from the original ones in DIR/u_id_mapping.tsv` |
| recommend | an original id instead of the dataset's | `...: user id 'u3' is not in dataset 'tiny'; 'u3' is an original id (column 'raw_user' of DIR/u_id_mapping.tsv), whose user id in the dataset is '3'` |
| similar | unknown item id | `--items: item id 'nope' is not in dataset 'tiny'; its item ids are the item_id tokens of DIR/tiny.*.inter (e.g. ...)` |
| recommend | `--users` file missing / empty | `--users X: no such file (...)` / `--users X: no user id in the file` |
| similar, plot | unknown modality | `--features: modality 'audio' is not loaded ... (its modalities: ['image', 'text'])` |
| every file output | folder missing / output exists / wrong suffix | `--out X: folder D does not exist; create it first` / `--out X already exists; pass --force to overwrite it` / `--out X: unknown format '.txt', ...` |
| evaluation | `--ks 0`, `--ks 100` > topk, `--metrics auc`, `--threads 0` | `per-user metrics: --ks must be positive integers, got 0` / `k=100 exceeds the configured topk [10, 20, 50]` / ... (all before the dataset is loaded) |
| plot | unknown kind | `plot kind 'pictures' is unknown; use one of embeddings, curves, leaderboard` |
| plot | `--runs` missing / a line not JSON / not an object / without a field / a non-number | `--runs X: no such file` / `X: line 2: not JSON (...)` / `X: line 1: a JSON list, not an object` / `X: line 1: no field 'seed'` / `X: line 1: field 'recall@20' is 'abc', not a number` |
| leaderboard | journal line not JSON / not a record | `OUT/journal.jsonl: line 2: not JSON (...); remove the line (its run is redone) or start another --out` / `...: line 1: no field 'kind' ...` (a torn last line of a killed run is cut off, not an error) |
| leaderboard | per-user CSV missing / without a column / with a non-number | `OUT/per_user/BPR_2021.csv: missing column(s) ['ndcg@20']; found [...] (per-user file of OUT/journal.jsonl line 4)` / `...: field 'recall@20' row 3 (line 4) (user 2): 'abc' is not a number (...)` |
| leaderboard | settings.json not JSON / `--out` a file / `--epochs 0`, `--time_budget 0` | `OUT/settings.json: not JSON (...); ... or --force to start over` / `--out X: is a file, not a folder` / `--epochs must be at least 1, got 0` |
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import FAST, make_mmrec_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One BPR checkpoint of the tiny dataset for every case (``u_id_mapping.tsv`` beside it, as a
    converter copies it: original user ``u<n>`` is the dataset's user ``<n>``)."""
    from dataset_converters.mmrec import convert
    from recbole_mm.quick_start import run_recbole_mm

    root = tmp_path_factory.mktemp("trained")
    convert(str(make_mmrec_folder(root / "raw")), str(root / "data"))
    users = pd.read_csv(root / "data" / "tiny" / "tiny.train.inter", sep="\t")["user_id:token"].unique()
    pd.DataFrame({"raw_user": [f"u{u}" for u in users], "userID": users}).to_csv(
        root / "data" / "tiny" / "u_id_mapping.tsv", sep="\t", index=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # RecBole's log/ folder
        run_recbole_mm("BPR", "tiny", config_dict=dict(FAST, data_path=str(root / "data"), epochs=1,
                                                       checkpoint_dir=str(root / "saved")), print_result=False)
    (ckpt,) = (root / "saved").glob("BPR-*.pth")
    return {"ckpt": str(ckpt), "root": root}


def _bad_files(tmp):
    (tmp / "text.pth").write_text("not a checkpoint\n")
    torch.save({"a": torch.ones(2)}, tmp / "weights.pth")
    (tmp / "folder.pth").mkdir()
    (tmp / "exists.csv").write_text("keep me\n")
    (tmp / "exists.png").write_text("keep me\n")
    (tmp / "users.txt").write_text("3\n\nnobody\nx\n")
    (tmp / "raw_users.txt").write_text("3\nu3\n")
    (tmp / "empty.txt").write_text("\n\n")


# (case, module, argv with {ckpt} / {tmp}, message regex); every case: exit 2, one error line, no new file
CASES = [
    ("recommend: checkpoint missing", "recommend", ["--checkpoint", "{tmp}/none.pth", "--out", "{tmp}/r.csv"],
     r"--checkpoint \S+none.pth: no such file$"),
    ("recommend: checkpoint is text", "recommend", ["--checkpoint", "{tmp}/text.pth", "--out", "{tmp}/r.csv"],
     r"--checkpoint \S+text.pth: not a checkpoint saved by a recbole_mm/RecBole run \(torch.load: "),
    ("recommend: bare state dict", "recommend", ["--checkpoint", "{tmp}/weights.pth", "--out", "{tmp}/r.csv"],
     r"weights.pth: not a checkpoint saved by a recbole_mm/RecBole run \(no 'config' / 'state_dict'; its keys: "
     r"\['a'\]\)"),
    ("recommend: checkpoint is a folder", "recommend", ["--checkpoint", "{tmp}/folder.pth", "--out", "{tmp}/r.csv"],
     r"folder.pth: is a folder, not a checkpoint file"),
    ("recommend: topk 0", "recommend", ["--checkpoint", "{ckpt}", "--topk", "0", "--out", "{tmp}/r.csv"],
     r"^error: --topk must be a positive integer, got 0$"),
    ("recommend: batch size 0", "recommend", ["--checkpoint", "{ckpt}", "--batch-size", "0", "--out", "{tmp}/r.csv"],
     r"--batch-size must be a positive integer, got 0"),
    ("recommend: nothing to do", "recommend", ["--checkpoint", "{ckpt}"], r"nothing to do: give --out"),
    ("recommend: out folder missing", "recommend", ["--checkpoint", "{ckpt}", "--out", "{tmp}/nodir/r.csv"],
     r"--out \S+nodir/r.csv: folder \S+nodir does not exist; create it first"),
    ("recommend: out exists", "recommend", ["--checkpoint", "{ckpt}", "--out", "{tmp}/exists.csv"],
     r"--out \S+exists.csv already exists; pass --force to overwrite it"),
    ("recommend: out format", "recommend", ["--checkpoint", "{ckpt}", "--out", "{tmp}/r.txt"],
     r"--out \S+r.txt: unknown format '.txt', use one of .parquet, .csv"),
    ("recommend: users file missing", "recommend",
     ["--checkpoint", "{ckpt}", "--users", "{tmp}/none.txt", "--out", "{tmp}/r.csv"],
     r"--users \S+none.txt: no such file"),
    ("recommend: users file empty", "recommend",
     ["--checkpoint", "{ckpt}", "--users", "{tmp}/empty.txt", "--out", "{tmp}/r.csv"],
     r"--users \S+empty.txt: no user id in the file"),
    ("recommend: unknown user", "recommend",
     ["--checkpoint", "{ckpt}", "--users", "{tmp}/users.txt", "--out", "{tmp}/r.csv"],
     r"--users \S+users.txt: line 3: user id 'nobody' is not in dataset 'tiny' \(and 1 more\); the dataset's user "
     r"ids \(e.g. '\d+', '\d+', '\d+'\) are mapped from the original ones in \S+tiny/u_id_mapping.tsv$"),
    ("recommend: original user id", "recommend",
     ["--checkpoint", "{ckpt}", "--users", "{tmp}/raw_users.txt", "--out", "{tmp}/r.csv"],
     r"raw_users.txt: line 2: user id 'u3' is not in dataset 'tiny'; 'u3' is an original id \(column 'raw_user' of "
     r"\S+u_id_mapping.tsv\), whose user id in the dataset is '3'$"),
    ("similar: checkpoint is text", "similar", ["--checkpoint", "{tmp}/text.pth", "--items", "4"],
     r"--checkpoint \S+text.pth: not a checkpoint"),
    ("similar: topk 0", "similar", ["--checkpoint", "{ckpt}", "--items", "4", "--topk", "0"],
     r"--topk must be a positive integer, got 0"),
    ("similar: unknown item", "similar", ["--checkpoint", "{ckpt}", "--items", "4", "nope"],
     r"--items: item id 'nope' is not in dataset 'tiny'; its item ids are the item_id tokens of "
     r"\S+tiny/tiny.\*.inter \(e.g. "),
    ("similar: unknown modality", "similar", ["--checkpoint", "{ckpt}", "--items", "4", "--features", "audio"],
     r"--features: modality 'audio' is not loaded in dataset 'tiny' \(its modalities: \['image', 'text'\]\)"),
    ("similar: out exists", "similar", ["--checkpoint", "{ckpt}", "--items", "4", "--out", "{tmp}/exists.csv"],
     r"already exists; pass --force"),
    ("evaluation: checkpoint missing", "evaluation", ["--model_file", "{tmp}/none.pth", "--out", "{tmp}/p.csv"],
     r"--model_file \S+none.pth: no such file"),
    ("evaluation: bare state dict", "evaluation", ["--model_file", "{tmp}/weights.pth", "--out", "{tmp}/p.csv"],
     r"--model_file \S+weights.pth: not a checkpoint saved by a recbole_mm/RecBole run"),
    ("evaluation: k 0", "evaluation", ["--model_file", "{ckpt}", "--out", "{tmp}/p.csv", "--ks", "0"],
     r"per-user metrics: --ks must be positive integers, got 0"),
    ("evaluation: k above topk", "evaluation", ["--model_file", "{ckpt}", "--out", "{tmp}/p.csv", "--ks", "100"],
     r"per-user metrics: k=100 exceeds the configured topk \[10, 20, 50\]"),
    ("evaluation: not a top-k metric", "evaluation", ["--model_file", "{ckpt}", "--out", "{tmp}/p.csv", "--metrics",
                                                      "auc"], r"\['auc'\] are not top-k metrics"),
    ("evaluation: threads 0", "evaluation", ["--model_file", "{ckpt}", "--out", "{tmp}/p.csv", "--threads", "0"],
     r"--threads must be a positive integer, got 0"),
    ("evaluation: out folder missing", "evaluation", ["--model_file", "{ckpt}", "--out", "{tmp}/nodir/p.csv"],
     r"folder \S+nodir does not exist"),
    ("evaluation: out exists", "evaluation", ["--model_file", "{ckpt}", "--out", "{tmp}/exists.csv"],
     r"--out \S+exists.csv already exists; pass --force"),
    ("plot: unknown kind", "plot", ["pictures", "--out", "{tmp}/p.png"],
     r"^error: plot kind 'pictures' is unknown; use one of embeddings, curves, leaderboard$"),
    ("plot: checkpoint is text", "plot", ["embeddings", "--checkpoint", "{tmp}/text.pth", "--out", "{tmp}/p.png"],
     r"--checkpoint \S+text.pth: not a checkpoint"),
    ("plot: unknown modality", "plot", ["embeddings", "--checkpoint", "{ckpt}", "--features", "audio", "--out",
                                        "{tmp}/p.png"], r"--features: modality 'audio' is not loaded"),
    ("plot: unknown colour field", "plot", ["embeddings", "--checkpoint", "{ckpt}", "--color", "genre", "--out",
                                            "{tmp}/p.png"], r"--color: 'genre' is not 'popularity' or an item field"),
    ("plot: out not png", "plot", ["embeddings", "--checkpoint", "{ckpt}", "--out", "{tmp}/p.jpg"],
     r"--out \S+p.jpg: plots are written as PNG"),
    ("plot: out exists", "plot", ["embeddings", "--checkpoint", "{ckpt}", "--out", "{tmp}/exists.png"],
     r"--out \S+exists.png already exists; pass --force"),
    ("plot: out folder missing", "plot", ["embeddings", "--checkpoint", "{ckpt}", "--out", "{tmp}/nodir/p.png"],
     r"folder \S+nodir does not exist"),
    ("plot: runs missing", "plot", ["curves", "--runs", "{tmp}/none.jsonl", "--out", "{tmp}/p.png"],
     r"--runs \S+none.jsonl: no such file"),
]

RUNS = {  # runs.jsonl contents for the plot cases below
    "not JSON": ('{"model": "BPR", "seed": 1, "curve": [0.1], "recall@20": 0.2}\nnot json\n',
                 r"runs.jsonl: line 2: not JSON \("),
    "a list": ("[1, 2]\n", r"runs.jsonl: line 1: a JSON list, not an object"),
    "no seed": ('{"model": "BPR", "curve": [0.1]}\n', r"runs.jsonl: line 1: no field 'seed' \(not a benchmarks/bench"),
    "curve text": ('{"model": "BPR", "seed": 1, "curve": [0.1, "x"]}\n',
                   r"runs.jsonl: line 1: field 'curve' is 'x', not a number"),
    "metric text": ('{"model": "BPR", "seed": 1, "curve": [0.1], "recall@20": "abc"}\n',
                    r"runs.jsonl: line 1: field 'recall@20' is 'abc', not a number"),
    "no metric": ('{"model": "BPR", "seed": 1, "curve": [0.1]}\n', r"runs.jsonl: line 1: no 'recall@20' \(--metric\)"),
}
CASES += [(f"plot: runs {name}", "plot", ["curves" if "curve" in name or name == "no seed" else "leaderboard",
                                          "--runs", "{tmp}/runs.jsonl", "--out", "{tmp}/p.png"], message)
          for name, (_, message) in RUNS.items()]


def _one_error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error")]
    assert "Traceback" not in err and len(errors) == 1, err[-3000:]
    return errors[0]


@pytest.mark.parametrize("case,module,argv,message", CASES, ids=[c[0] for c in CASES])
def test_tool_bad_input_is_one_line(trained, tmp_path, capsys, case, module, argv, message):
    import importlib

    _bad_files(tmp_path)
    for name, (text, _) in RUNS.items():
        if case == f"plot: runs {name}":
            (tmp_path / "runs.jsonl").write_text(text)
    before = _files(tmp_path)
    argv = [a.format(ckpt=trained["ckpt"], tmp=tmp_path) for a in argv]
    main = importlib.import_module(f"recbole_mm.{module}").main
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert re.search(message, line), line
    assert _files(tmp_path) == before, "an output was written or changed"


def _files(folder):
    """Every file under ``folder`` with its bytes, but RecBole's log/ and the feature cache."""
    return {p: p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.relative_to(folder).parts[0] not in ("log", "mm_cache")}


def test_real_entry_points_print_only_the_line(trained, tmp_path):
    """``python -m``: exit status 2 and stderr exactly the one line, for errors found before the
    dataset is loaded (nothing else is printed by then)."""
    _bad_files(tmp_path)
    for module, argv, start in (
            ("recommend", ["--checkpoint", str(tmp_path / "text.pth"), "--out", str(tmp_path / "r.csv")],
             f"error: --checkpoint {tmp_path / 'text.pth'}: not a checkpoint"),
            ("plot", ["pictures", "--out", str(tmp_path / "p.png")], "error: plot kind 'pictures' is unknown"),
            ("evaluation", ["--model_file", trained["ckpt"], "--out", str(tmp_path / "exists.csv")],
             f"error: --out {tmp_path / 'exists.csv'} already exists")):
        out = subprocess.run([sys.executable, "-m", f"recbole_mm.{module}", *argv], capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
        assert out.returncode == 2 and out.stderr.startswith(start) and out.stderr.count("\n") == 1, out.stderr
    assert (tmp_path / "exists.csv").read_text() == "keep me\n"


def test_evaluation_of_a_checkpoint_in_a_fresh_process(trained, tmp_path):
    """A fresh ``python -m recbole_mm.evaluation`` (no Config built in the process, so none of
    RecBole's NumPy aliases) computes NDCG and MAP; ``--force`` overwrites its CSV."""
    out = tmp_path / "per_user.csv"
    out.write_text("old\n")
    cmd = [sys.executable, "-m", "recbole_mm.evaluation", "--model_file", trained["ckpt"], "--out", str(out),
           "--metrics", "recall", "ndcg", "map", "--force"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["user", "recall@10", "recall@20", "ndcg@10", "ndcg@20", "map@10", "map@20"]


def test_recommend_writes_nothing_when_the_export_fails(tiny_dataset, run_config, tmp_path, capsys):
    """``--out`` with ``--export-embeddings`` of a model without embeddings: neither is written."""
    from recbole_mm import recommend as rec
    from tests.test_recommend import train_checkpoint

    ckpt = train_checkpoint("ItemKNNCBF", tiny_dataset, run_config)
    capsys.readouterr()  # the training's own output (its loggers may hold an earlier test's closed stream)
    assert rec.main(["--checkpoint", ckpt, "--out", str(tmp_path / "r.csv"), "--export-embeddings",
                     str(tmp_path / "emb")]) == 2
    assert "its score is not a dot product" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "emb").exists()


# -- benchmarks/leaderboard.py ----------------------------------------------------------------------------
def _leaderboard(tmp_path):
    sys.path.insert(0, str(REPO))
    from benchmarks import leaderboard as lb
    from tests.test_leaderboard import FakeRunner

    argv = ["--dataset", "tiny", "--data_path", str(tmp_path), "--out", str(tmp_path / "out"), "--models", "BPR",
            "--budget", "1", "--seeds", "2"]
    runner = FakeRunner()
    assert lb.main(argv, runner) == 0
    return lb, argv, runner, tmp_path / "out"


def _edit_line(path, n, edit):
    lines = path.read_text().splitlines()
    lines[n - 1] = edit(lines[n - 1])
    path.write_text("\n".join(lines) + "\n")


def _without(column):
    def edit(path):
        pd.read_csv(path).drop(columns=column).to_csv(path, index=False)
    return edit


def _text_in(column, row):
    def edit(path):
        frame = pd.read_csv(path).astype({column: object})
        frame.loc[row, column] = "abc"
        frame.to_csv(path, index=False)
    return edit


LEADERBOARD = [  # (case, edit of OUT, extra argv, message)
    ("journal line not JSON", lambda out: _edit_line(out / "journal.jsonl", 2, lambda s: s[:-1]), [],
     r"journal.jsonl: line 2: not JSON \(.*\); remove the line \(its run is redone\) or start another --out$"),
    ("journal line a list", lambda out: _edit_line(out / "journal.jsonl", 1, lambda s: "[1, 2]"), [],
     r"journal.jsonl: line 1: a JSON list, not a journal record"),
    ("journal record without kind",
     lambda out: _edit_line(out / "journal.jsonl", 1, lambda s: json.dumps({k: v for k, v in json.loads(s).items()
                                                                            if k != "kind"})), [],
     r"journal.jsonl: line 1: no field 'kind' \(not a leaderboard journal record\)"),
    ("journal test metric text",
     lambda out: _edit_line(out / "journal.jsonl", 3, lambda s: s.replace('"ndcg@20": ', '"ndcg@20": "x", "y": ')),
     [], r"journal.jsonl: line 3: field 'test' has no number for 'ndcg@20'"),
    ("per-user column missing", lambda out: _without("ndcg@20")(out / "per_user" / "BPR_2021.csv"), [],
     r"per_user/BPR_2021.csv: missing column\(s\) \['ndcg@20'\]; found \[.*\] \(per-user file of \S+journal.jsonl "
     r"line 3\)$"),
    ("per-user value text", lambda out: _text_in("recall@20", 2)(out / "per_user" / "BPR_2020.csv"), [],
     r"per_user/BPR_2020.csv: field 'recall@20' row 3 \(line 4\) \(user 2\): 'abc' is not a number \(per-user file "
     r"of \S+journal.jsonl line 2\)"),
    ("per-user file gone", lambda out: (out / "per_user" / "BPR_2021.csv").unlink(), [],
     r"per_user/BPR_2021.csv: no such file \(per-user file of \S+journal.jsonl line 3\)"),
    ("settings not JSON", lambda out: (out / "settings.json").write_text("{"), [],
     r"settings.json: not JSON \(.*\); .* or --force to start over"),
    ("epochs 0", None, ["--epochs", "0"], r"^error: --epochs must be at least 1, got 0$"),
    ("time budget 0", None, ["--time_budget", "0"], r"--time_budget must be a positive number of seconds, got 0.0"),
]


@pytest.mark.parametrize("case,edit,extra,message", LEADERBOARD, ids=[c[0] for c in LEADERBOARD])
def test_leaderboard_bad_input_is_one_line(tmp_path, capsys, case, edit, extra, message):
    lb, argv, runner, out = _leaderboard(tmp_path)
    if edit is not None:
        edit(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    runner.calls.clear()
    assert lb.main(argv + extra, runner) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert re.search(message, line), line
    assert runner.calls == [] and {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_leaderboard_out_is_a_file(tmp_path, capsys):
    from benchmarks import leaderboard as lb

    (tmp_path / "out").write_text("x")
    argv = ["--dataset", "tiny", "--data_path", str(tmp_path), "--out", str(tmp_path / "out"), "--models", "BPR"]
    assert lb.main(argv, lambda job: None) == 2
    assert _one_error_line(capsys.readouterr().err) == f"error: --out {tmp_path / 'out'}: is a file, not a folder"


def test_leaderboard_torn_last_line_is_cut_and_the_run_resumes(tmp_path):
    """A killed run's half-written last record is dropped, and the next record starts its own line
    (it used to be glued onto the torn one and lost)."""
    lb, argv, runner, out = _leaderboard(tmp_path)
    journal = out / "journal.jsonl"
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # killed while writing the last seed run
    runner.calls.clear()
    assert lb.main(argv, runner) == 0 and [c[0] for c in runner.calls] == ["seed"]
    again = journal.read_text().splitlines()
    assert len(again) == len(lines) and all(isinstance(json.loads(line), dict) for line in again)
