import subprocess
import sys

import pytest
import torch

from recbole_mm import compat


class _Opaque:
    """Stands in for RecBole's Config inside a checkpoint: not a plain tensor container."""

    def __init__(self):
        self.model = "VBPR"


def test_load_checkpoint_reads_pickled_config(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"config": _Opaque(), "state_dict": {"w": torch.ones(2)}}, path)
    with pytest.raises(Exception):
        torch.load(path)  # torch>=2.6 default weights_only=True refuses it: what compat exists for
    ckpt = compat.load_checkpoint(path)
    assert ckpt["config"].model == "VBPR" and torch.equal(ckpt["state_dict"]["w"], torch.ones(2))


def test_make_compatible_wraps_torch_trainers_only():
    from recbole.trainer import DecisionTreeTrainer, NCLTrainer, Trainer

    wrapped = compat.make_compatible(NCLTrainer)
    assert issubclass(wrapped, compat.CompatTrainerMixin) and issubclass(wrapped, NCLTrainer)
    assert compat.make_compatible(NCLTrainer) is wrapped  # cached
    assert compat.make_compatible(wrapped) is wrapped
    assert compat.make_compatible(DecisionTreeTrainer) is DecisionTreeTrainer
    assert wrapped.evaluate is compat.CompatTrainerMixin.evaluate
    assert compat.make_compatible(Trainer).resume_checkpoint is compat.CompatTrainerMixin.resume_checkpoint


def test_ddp_backend_is_gloo_without_cuda():
    if not torch.cuda.is_available():
        assert compat.ddp_backend() == "gloo"


def test_check_environment_passes_on_pinned_stack():
    compat.check_environment()


def test_version_parsing():
    assert compat._version_tuple("1.12.0") == (1, 12, 0)
    assert compat._version_tuple("2.0.0rc1") == (2, 0, 0)


def test_no_ray_and_no_recbole_quick_start_imported():
    code = (
        "import sys, recbole_mm.quick_start, recbole_mm.hyper, recbole_mm.utils, recbole_mm.data;"
        "bad=[m for m in sys.modules if m=='ray' or m.startswith('ray.') or m=='recbole.quick_start'];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_grid_search_visits_every_point_once(tmp_path):
    params = tmp_path / "space.test"
    params.write_text("a choice [1,2,3]\nb choice ['x','y']\n")
    seen = []

    def objective(config_dict, config_file_list):
        seen.append((config_dict["a"], config_dict["b"]))
        score = config_dict["a"] + (0.5 if config_dict["b"] == "y" else 0.0)
        return {"model": "M", "best_valid_score": score, "valid_score_bigger": True,
                "best_valid_result": {"recall@20": score}, "test_result": {"recall@20": score}}

    tuner = compat.hyper_tuning_class()(objective, algo="exhaustive", params_file=str(params), early_stop=100)
    tuner.run()
    assert sorted(seen) == sorted((a, b) for a in (1, 2, 3) for b in ("x", "y"))
    assert tuner.best_params == {"a": 3, "b": "y"}


def _bare_trainer(path):
    """A RecBole trainer with just what ``_save_checkpoint`` reads (no dataset needed)."""
    import logging

    from recbole.trainer import Trainer

    trainer = object.__new__(compat.make_compatible(Trainer))
    model = torch.nn.Linear(2, 1)
    model.other_parameter = lambda: None
    trainer.config = {"single_spec": True, "local_rank": 0}
    trainer.cur_step, trainer.best_valid_score, trainer.model = 0, 0.5, model
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer.saved_model_file, trainer.logger = str(path), logging.getLogger("test")
    return trainer


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous checkpoint readable and no temp file."""
    path = tmp_path / "best.pth"
    trainer = _bare_trainer(path)
    trainer._save_checkpoint(3)
    assert compat.load_checkpoint(path)["epoch"] == 3

    def broken_save(obj, f, **kwargs):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer._save_checkpoint(4)
    assert compat.load_checkpoint(path)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["best.pth"]


def test_use_gpu_false_keeps_a_single_process_run_on_cpu(tiny_dataset, monkeypatch):
    """RecBole 1.2.1 moves to CUDA whenever it is available, whatever use_gpu says; our Config
    honours use_gpu=False (the device is only named here, so no GPU is needed to check it)."""
    from recbole_mm.config import Config

    data_path, name = tiny_dataset
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Config("BPR", name, config_dict={"data_path": data_path})["device"].type == "cuda"
    assert Config("BPR", name, config_dict={"data_path": data_path, "use_gpu": False})["device"].type == "cpu"
