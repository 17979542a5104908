"""The model contract: discovery, the extension point for outside models, graph operators that
follow .to(), declared hooks."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import SparseOperator
from recbole_mm.utils import canonical_model_name, get_model, plugin_models, register_model

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "recbole_mm" / "model" / "general_recommender"


def test_every_model_file_is_discovered_with_its_yaml():
    """Adding a model is one file + one yaml: the registry scans the package, nothing lists names."""
    from recbole_mm.model.general_recommender import discover

    models = discover()
    files = {p.stem for p in MODEL_DIR.glob("*.py") if not p.name.startswith("_")}
    assert {cls.__module__.rsplit(".", 1)[1] for cls in models.values()} == files
    assert len(models) == len(files)  # one model per file
    for name, cls in models.items():
        assert issubclass(cls, MultimodalRecommender)
        assert (REPO / "properties" / "model" / f"{name}.yaml").is_file(), name
        assert re.search(r"(19|20)\d\d", sys.modules[cls.__module__].__doc__ or ""), name  # cites its paper


def test_no_model_imports_the_pipeline():
    """Models never import the pipeline (quick_start, pretrain, config, the registry): no import cycle."""
    forbidden = ("recbole_mm.quick_start", "recbole_mm.pretrain", "recbole_mm.config", "recbole_mm.utils",
                 "recbole_mm.hyper", "recbole_mm.data.embedded")
    code = ("import sys, importlib; import recbole_mm.model.general_recommender as g; g.discover(); "
            f"bad = [m for m in {forbidden!r} if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_registered_outside_model_is_listed_trained_and_searched(tiny_dataset, run_config, tmp_path, capsys):
    from recbole_mm.hyper import main as hyper_main
    from recbole_mm.quick_start import objective_function, run_recbole_mm
    from tests.toy_model import ToyMM

    import recbole_mm

    assert recbole_mm.register_model(ToyMM) is ToyMM and register_model(ToyMM) is ToyMM  # idempotent
    with pytest.raises(ValueError, match="ToyMM"):
        canonical_model_name("NoSuchModel")  # the unknown-model message lists it
    assert get_model("toymm") is ToyMM and "ToyMM" in plugin_models()
    data_path, name = tiny_dataset
    cfg = dict(run_config, data_path=data_path, epochs=1)
    result = run_recbole_mm("ToyMM", name, config_dict=cfg, print_result=False)
    assert result["config"]["toy_layers"] == 1  # its own yaml (config_file) was read
    assert 0 <= result["test_result"]["recall@20"] <= 1
    by_class = objective_function(dict(cfg, model=ToyMM, dataset=name))
    assert by_class["model"] == "ToyMM" and by_class["test_result"] == result["test_result"]
    params = tmp_path / "toy.hyper"
    params.write_text("toy_layers choice [1,2]\n")
    argv = ["--model=ToyMM", f"--dataset={name}", f"--data_path={data_path}", f"--params_file={params}",
            "--epochs=1", "--show_progress=False", f"--output_file={tmp_path / 'toy.md'}", "--embedding_size=8",
            f"--checkpoint_dir={tmp_path / 'ck'}"]
    old_argv = sys.argv
    sys.argv = ["run_hyper.py", *argv]  # RecBole's Config also reads --key=value from sys.argv
    try:
        assert hyper_main(argv) == 0
    finally:
        sys.argv = old_argv
    table = (tmp_path / "toy.md").read_text()
    assert "toy_layers:1" in table and "toy_layers:2" in table and "2 trials" in table
    with pytest.raises(ValueError, match="already a model"):
        register_model(type("FREEDOM", (MultimodalRecommender,), {}))


def test_outside_model_from_the_command_line(tiny_dataset, tmp_path):
    """--model=package.module:ClassName imports and registers a model from the command line."""
    data_path, name = tiny_dataset
    cmd = [sys.executable, str(REPO / "run_recbole_mm.py"), "--model=tests.toy_model:ToyMM", f"--dataset={name}",
           f"--data_path={data_path}", "--epochs=1", "--show_progress=False", "--embedding_size=8",
           f"--checkpoint_dir={tmp_path / 'ck'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0 and "TEST_RESULT {" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("model", sorted(plugin_models()))
def test_graphs_follow_the_model(tiny_dataset, model):
    """Every graph operator is module state: .to() moves it (here to float64 and back: the same
    mechanism as a device move), and it stays out of the checkpoint."""
    from tests.test_models import _build

    data_path, name = tiny_dataset
    _, m, _ = _build(model, data_path, name)
    from recbole_mm.model.layers import EdgeGraph

    operators = [op for op in m.modules() if isinstance(op, SparseOperator)]
    edge_graphs = [g for g in m.modules() if isinstance(g, EdgeGraph)]  # GRCN: fixed pattern, learned weights
    # VBPR and DMRL use no graph; IDFREE keeps its edge lists as non-persistent buffers (re-weighted per batch)
    assert operators or edge_graphs or model in ("VBPR", "DMRL", "IDFREE")
    assert all(g.rows.device == m.device for g in edge_graphs)
    m.double()
    assert all(op.csr.dtype == torch.float64 and op.csr_t.dtype == torch.float64 for op in operators)
    m.float()
    assert all(op.csr.dtype == torch.float32 for op in operators) and m.device == torch.device("cpu")
    assert not any("csr" in key or "crow" in key for key in m.state_dict())
    m.pre_epoch_processing()  # declared on the base class: callable on every model
    assert all(op.csr.device == m.device for op in m.modules() if isinstance(op, SparseOperator))


def test_sparse_operator_edges_and_transpose():
    rows, cols = torch.tensor([0, 0, 2, 1]), torch.tensor([1, 2, 0, 0])
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (3, 3)).coalesce()
    op = SparseOperator(coo)
    r, c, v = op.edges()
    assert torch.equal(torch.stack([r, c]), coo.indices()) and torch.equal(v, coo.values())
    x = torch.randn(3, 2, requires_grad=True)
    (op @ x).sum().backward()
    torch.testing.assert_close(x.grad, coo.to_dense().T @ torch.ones(3, 2))


@pytest.mark.parametrize("model", sorted(plugin_models()))
def test_every_model_runs_under_run_hyper(tiny_dataset, run_config, model):
    """run_hyper.py's objective trains and scores every plugin model (one epoch)."""
    from recbole_mm.quick_start import objective_function

    data_path, name = tiny_dataset
    result = objective_function(dict(run_config, data_path=data_path, epochs=1, model=model, dataset=name))
    assert result["model"] == model and 0 <= result["test_result"]["recall@20"] <= 1
    assert result["best_valid_score"] == result["best_valid_score"]  # not NaN
