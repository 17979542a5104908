"""Shipped search spaces: every model's parses and is valid; budgeted grid subsets; run_hyper.py on them."""

import re
import sys
from pathlib import Path

import pytest

from recbole_mm import search_space
from recbole_mm.model.general_recommender import discover

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("model", sorted(discover()) + search_space.baseline_models())
def test_every_shipped_space_parses_and_is_valid(model, tmp_path):
    from recbole.trainer.hyper_tuning import HyperTuning, _spacesize

    space = search_space.load_space(model)
    assert space and all(isinstance(v, list) and v for v in space.values())
    assert set(space) <= search_space.known_keys(model)
    for values in space.values():  # floats written as floats, never YAML strings such as '1e-5'
        assert not any(isinstance(v, str) and re.fullmatch(r"[-+.\deE]+", v) for v in values), values
    # RecBole's HyperTuning sees the same grid (list values as text, decoded before a trial)
    encoded, decode = search_space.hyperopt_choices(space)
    parsed = HyperTuning._build_space_from_dict({"choice": encoded})
    assert list(parsed) == list(space)
    assert _spacesize(parsed) == search_space.grid_size(space)
    assert decode({k: v[-1] for k, v in encoded.items()}) == {k: v[-1] for k, v in space.items()}
    if not any(isinstance(v, list) for vals in space.values() for v in vals):  # and its params-file reader
        path = tmp_path / "space.hyper"
        path.write_text(search_space.to_params_file(space))
        assert _spacesize(HyperTuning._build_space_from_file(str(path))) == search_space.grid_size(space)


def test_every_model_and_baseline_is_listed():
    listed = set(search_space.models_with_space())
    assert set(discover()) <= listed
    assert {"BPR", "LightGCN", "NGCF", "ItemKNN"} <= set(search_space.baseline_models())
    with pytest.raises(ValueError, match="no search space ships"):
        search_space.space_file("Pop")


@pytest.mark.parametrize("space, message", [
    ({}, "non-empty mapping"),
    ({"no_such_key": [1]}, "no_such_key: not a parameter"),
    ({"reg_weight": []}, "reg_weight: must be a non-empty list"),
    ({"reg_weight": 0.1}, "reg_weight: must be a non-empty list"),
    ({"reg_weight": ["1e-5"]}, "is a string"),
    ({"reg_weight": [0.1, 0.1]}, "repeated values"),
    ({"reg_weight": [{"a": 1}]}, "not a number"),
])
def test_bad_spaces_name_file_and_field(space, message):
    known = search_space.known_keys("VBPR")
    assert "learning_rate" in known and "reg_weight" in known  # global and model keys
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        search_space.validate_space(space, known, "VBPR.yaml")
    assert str(info.value).startswith("VBPR.yaml: search_space")


def test_budget_subset_size_determinism_and_prefix():
    space = {"a": [1, 2, 3, 4], "b": [0.1, 0.2, 0.3], "c": [True, False]}  # 24 points
    full = search_space.grid_points(space)
    assert len(full) == 24 and len({tuple(p.values()) for p in full}) == 24
    assert full[0] == {"a": 1, "b": 0.1, "c": True} and full[1] == {"a": 1, "b": 0.1, "c": False}
    five = search_space.grid_points(space, 5, seed=7)
    assert len(five) == 5 and len({tuple(p.values()) for p in five}) == 5
    assert all(p in full for p in five)
    assert five == search_space.grid_points(space, 5, seed=7)  # same seed, same subset
    assert five != search_space.grid_points(space, 5, seed=8)
    assert search_space.grid_points(space, 8, seed=7)[:5] == five  # a larger budget extends a smaller one
    assert search_space.grid_points(space, 100, seed=7) == full  # budget >= grid: the whole grid
    with pytest.raises(ValueError, match="budget"):
        search_space.grid_points(space, 0)


def test_wheel_config_ships_the_baselines():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "recbole_mm.properties.baselines" in config["packages"]
    assert config["package-dir"]["recbole_mm.properties.baselines"] == "properties/baselines"
    assert config["package-data"]["recbole_mm.properties.baselines"] == ["*.yaml"]


def _hyper(argv, monkeypatch):
    from recbole_mm.hyper import main

    monkeypatch.setattr(sys, "argv", ["run_hyper.py", *argv])  # RecBole's Config also reads sys.argv
    return main(argv)


def test_run_hyper_searches_the_shipped_space_within_budget(tiny_dataset, tmp_path, monkeypatch, capsys):
    data_path, name = tiny_dataset
    out = tmp_path / "hyper.md"
    argv = ["--model=LightGCN", f"--dataset={name}", f"--data_path={data_path}", "--budget=2", "--seed=11",
            "--epochs=1", "--show_progress=False", "--state=WARNING", "--embedding_size=8",
            f"--output_file={out}", f"--checkpoint_dir={tmp_path / 'ck'}"]
    assert _hyper(argv, monkeypatch) == 0
    report = out.read_text()
    assert "2 trials" in report and "2 of 80 grid points (seed 11)" in report
    expected = search_space.grid_points(search_space.load_space("LightGCN"), 2, seed=11)
    for point in expected:  # the same subset the leaderboard draws
        assert ", ".join(f"{k}:{v}" for k, v in sorted(point.items())) in report


def test_run_hyper_without_a_space_is_one_line(tiny_dataset, monkeypatch, capsys):
    data_path, name = tiny_dataset
    code = _hyper(["--model=Pop", f"--dataset={name}", f"--data_path={data_path}"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: model Pop: no search space ships") and "--params_file" in err[-1]
