"""Short end-to-end trainings on the tiny dataset: plugin and RecBole models, checkpoints, seeds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_mm.model.general_recommender import discover
from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("model", sorted(discover()) + ["BPR", "LightGCN", "ItemKNN", "Pop"])
def test_two_epochs(tiny_dataset, run_config, model, capsys):
    data_path, name = tiny_dataset
    result = run_recbole_mm(model, name, config_dict=dict(run_config, data_path=data_path))
    out = capsys.readouterr().out
    assert "TEST_RESULT {" in out and "VALID_RESULT {" in out
    test = json.loads(out.split("TEST_RESULT ", 1)[1].splitlines()[0])
    assert set(test) >= {"recall@10", "recall@20", "ndcg@20", "precision@50", "map@50"}
    assert all(0.0 <= v <= 1.0 for v in test.values())
    assert result["epoch_log"] and all(e["train_s"] >= 0 for e in result["epoch_log"])


def test_same_seed_same_result_and_checkpoint_reload(tiny_dataset, run_config):
    data_path, name = tiny_dataset
    cfg = dict(run_config, data_path=data_path)
    first = run_recbole_mm("VBPR", name, config_dict=cfg, print_result=False)
    second = run_recbole_mm("VBPR", name, config_dict=cfg, print_result=False)
    assert first["test_result"] == second["test_result"]
    different = run_recbole_mm("VBPR", name, config_dict=dict(cfg, seed=7), print_result=False)
    assert different["best_valid_result"] != first["best_valid_result"] or \
        different["test_result"] != first["test_result"]
    # the checkpoint (config pickled inside) loads under torch>=2.6 and scores identically
    ckpt = sorted(Path(cfg["checkpoint_dir"]).glob("VBPR-*.pth"))[-1]
    config, model, dataset, train_data, valid_data, test_data = load_data_and_model(str(ckpt))
    from recbole_mm.utils import get_trainer

    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    assert trainer.evaluate(test_data, load_best_model=True, model_file=str(ckpt)) == different["test_result"]


def test_reproducibility_makes_cpu_lookups_deterministic_at_any_thread_count(tiny_dataset, run_config):
    """``reproducibility: True`` turns on torch's deterministic mode on CPU (RecBole's init_seed only
    sets cuDNN's): the backward of ``table[ids]`` with repeated ids then gives the same bits on every
    run at two threads; ``False`` turns it off again."""
    from recbole_mm.config import Config

    data_path, name = tiny_dataset
    threads = torch.get_num_threads()
    try:
        Config(model="BPR", dataset=name, config_dict=dict(run_config, data_path=data_path, reproducibility=False))
        assert not torch.are_deterministic_algorithms_enabled()
        Config(model="BPR", dataset=name, config_dict=dict(run_config, data_path=data_path))
        assert torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(2)
        gen = torch.Generator().manual_seed(0)
        ids, weights = torch.randint(0, 500, (8192,), generator=gen), torch.randn(8192, 64, generator=gen)
        table = torch.randn(500, 64, generator=gen, requires_grad=True)
        grads = [torch.autograd.grad((table[ids] * weights).sum(), table)[0] for _ in range(10)]
        assert all(torch.equal(grads[0], g) for g in grads[1:])
        torch.testing.assert_close(grads[0], torch.zeros(500, 64).index_add_(0, ids, weights))
    finally:
        torch.set_num_threads(threads)


def test_model_without_modalities_fails_clearly(tiny_dataset, run_config):
    data_path, name = tiny_dataset
    with pytest.raises(ValueError, match="VBPR needs item modalities"):
        run_recbole_mm("VBPR", name, config_dict=dict(run_config, data_path=data_path, modalities=None))


def test_vbpr_scores_consistent(tiny_dataset, run_config):
    """full_sort_predict and predict agree (same formula, vectorised)."""
    from recbole.data.interaction import Interaction

    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset, data_preparation
    from recbole_mm.model.general_recommender import VBPR

    data_path, name = tiny_dataset
    config = Config("VBPR", name, config_dict=dict(run_config, data_path=data_path))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = VBPR(config, train.dataset).eval()
    users = torch.tensor([1, 2, 3])
    full = model.full_sort_predict(Interaction({"user_id": users})).view(3, -1)
    items = torch.arange(dataset.item_num)
    pairwise = model.predict(Interaction({"user_id": users.repeat_interleave(dataset.item_num),
                                          "item_id": items.repeat(3)})).view(3, -1)
    torch.testing.assert_close(full, pairwise)


def test_cli_prints_results(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    cmd = [sys.executable, str(REPO / "run_recbole_mm.py"), "--model=vbpr", f"--dataset={name}",
           f"--data_path={data_path}", "--epochs=1", "--show_progress=False", "--embedding_size=8",
           f"--checkpoint_dir={tmp_path / 'ck'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TEST_RESULT {" in out.stdout and "VALID_RESULT {" in out.stdout
    bad = subprocess.run([sys.executable, str(REPO / "run_recbole_mm.py"), "--model=NoSuch", f"--dataset={name}",
                          f"--data_path={data_path}"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert bad.returncode != 0 and "Available models" in bad.stderr


@pytest.mark.parametrize("model", ["VBPR", "FREEDOM"])
def test_run_hyper_cli(tiny_dataset, tmp_path, model):
    data_path, name = tiny_dataset
    params = tmp_path / "hyper.test"
    params.write_text("learning_rate choice [0.01,0.001]\n")
    result_file = tmp_path / "hyper.md"
    cmd = [sys.executable, str(REPO / "run_hyper.py"), f"--model={model}", f"--dataset={name}",
           f"--data_path={data_path}", f"--params_file={params}", "--epochs=1", "--show_progress=False",
           f"--output_file={result_file}", f"--checkpoint_dir={tmp_path / 'ck'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BEST_PARAMS {\"learning_rate\"" in out.stdout
    table = result_file.read_text()
    assert "learning_rate:0.01" in table and "learning_rate:0.001" in table and "valid recall@20" in table


def test_run_hyper_over_alignrec_stage1_settings(tiny_dataset, tmp_path):
    """Searching ica_* settings: every trial runs stage 1 on its own settings into its own keyed file."""
    data_path, name = tiny_dataset
    params = tmp_path / "hyper.test"
    params.write_text("ica_output_dim choice [4,8]\n")
    cmd = [sys.executable, str(REPO / "run_hyper.py"), "--model=AlignRec", f"--dataset={name}",
           f"--data_path={data_path}", f"--params_file={params}", "--epochs=1", "--show_progress=False",
           "--ica_epochs=1", "--ica_hidden=16", "--ica_heads=2", "--embedding_size=8",
           f"--output_file={tmp_path / 'hyper.md'}", f"--checkpoint_dir={tmp_path / 'ck'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (out.stdout + out.stderr).count("ICA pre-training on modalities") == 2
    table = (tmp_path / "hyper.md").read_text()
    assert "ica_output_dim:4" in table and "ica_output_dim:8" in table
    sidecars = sorted((Path(data_path) / name).glob("fused-*.json"))
    assert sorted(json.loads(f.read_text())["settings"]["output_dim"] for f in sidecars) == [4, 8]
