"""The one place that adapts RecBole 1.2.1 to today's stack.

RecBole 1.2.1 (the newest release) predates torch 2.6, NumPy 2 and SciPy 1.13. Everything we do
to make it run lives here, done by subclassing RecBole's extension points, never by editing or
monkey-patching RecBole's modules at import time:

* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, but RecBole's checkpoints
  pickle the whole ``Config``. :func:`load_checkpoint` loads our own checkpoints with
  ``weights_only=False`` and :class:`CompatTrainerMixin` routes RecBole's trainers through it.
* ``recbole.quick_start`` imports ``ray`` (which needs ``pkg_resources`` and NumPy < 1.24);
  recbole_mm never imports it: :mod:`recbole_mm.quick_start` is our own.
* ``Config._init_device`` hard-codes the NCCL backend for DDP; :func:`ddp_backend` picks gloo on
  CPU, and :class:`CompatTrainerMixin` builds a CPU-valid ``DistributedDataParallel``.
* Under DDP RecBole names the checkpoint after each rank's own clock, lets rank 0 write it in
  place and has every rank read it back straight away; :class:`CompatTrainerMixin` shares rank
  0's file name, writes it atomically and waits for rank 0 before any rank loads it.
* RecBole's exhaustive hyper-parameter search hands hyperopt a ``RandomState``, which hyperopt
  >= 0.2.7 rejects; :func:`hyper_tuning_class` swaps in :func:`grid_search`.
* RecBole needs NumPy < 2 (``np.float_`` aliases) and SciPy < 1.13 (its LightGCN/NGCF/... call
  ``dok_matrix._update``); the package pins both and :func:`check_environment` explains a
  broken environment instead of failing deep inside RecBole.
"""

from __future__ import annotations

import importlib.metadata as _md
import os

import torch
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "load_checkpoint",
    "ddp_backend",
    "CompatTrainerMixin",
    "make_compatible",
    "check_environment",
    "grid_search",
    "hyper_tuning_class",
]


def _version_tuple(text: str) -> tuple:
    import re

    parts = []
    for piece in text.split(".")[:3]:
        leading = re.match(r"\d*", piece).group()  # "0rc1" -> "0"
        parts.append(int(leading) if leading else 0)
    return tuple(parts)


def check_environment() -> None:
    """Raise a readable error when NumPy/SciPy are too new for RecBole 1.2.1."""
    problems = []
    try:
        if _version_tuple(_md.version("numpy")) >= (2,):
            problems.append("numpy>=2 (RecBole 1.2.1 uses np.float_ and friends): pip install 'numpy<2'")
    except _md.PackageNotFoundError:  # pragma: no cover - numpy is a hard dependency
        pass
    try:
        if _version_tuple(_md.version("scipy")) >= (1, 13):
            problems.append(
                "scipy>=1.13 (RecBole's LightGCN/NGCF/... call dok_matrix._update): pip install 'scipy<1.13'"
            )
    except _md.PackageNotFoundError:  # pragma: no cover
        pass
    if problems:
        raise RuntimeError("recbole_mm: incompatible environment: " + "; ".join(problems))


def load_checkpoint(path, map_location=None):
    """Load a RecBole/recbole_mm checkpoint.

    Our checkpoints pickle the run's ``Config`` next to the state dict, which torch>=2.6's
    ``weights_only=True`` refuses; they are files this toolkit wrote itself, so full unpickling
    is what we want. Only call this on checkpoints you trust.
    """
    return torch.load(path, map_location=map_location, weights_only=False)


def ddp_backend() -> str:
    """NCCL only exists for CUDA; CPU-only DDP must use gloo."""
    return "nccl" if torch.cuda.is_available() and torch.distributed.is_nccl_available() else "gloo"


class CompatTrainerMixin:
    """Mixed in front of any RecBole trainer class (see :func:`make_compatible`)."""

    def __init__(self, config, model):
        cpu_ddp = (not config["single_spec"]) and config["device"].type == "cpu"
        if not cpu_ddp:
            super().__init__(config, model)
        else:
            # RecBole wraps the model in DDP with device_ids=[local_rank], which is CUDA-only.
            # Let it build everything else as a single process, then wrap for CPU ourselves.
            config["single_spec"] = True
            try:
                super().__init__(config, model)
            finally:
                config["single_spec"] = False
            self.distributed_model = DistributedDataParallel(self.model)
        if self._distributed():
            # Each rank stamped the file name with its own clock; only rank 0 writes it.
            name = [self.saved_model_file]
            torch.distributed.broadcast_object_list(name, src=0)
            self.saved_model_file = name[0]

    def _distributed(self) -> bool:
        return (not self.config["single_spec"]) and torch.distributed.is_available() \
            and torch.distributed.is_initialized()

    def _save_checkpoint(self, epoch, verbose=True, **kwargs):
        """RecBole's checkpoint, written to a temporary name and renamed into place.

        A reader (another rank, or a crash mid-write) then sees the old file or the new one,
        never a half-written zip.
        """
        if self._distributed() and self.config["local_rank"] != 0:
            return
        target = kwargs.pop("saved_model_file", self.saved_model_file)
        tmp = f"{target}.tmp{os.getpid()}"
        try:
            super()._save_checkpoint(epoch, verbose=False, saved_model_file=tmp, **kwargs)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        if verbose:
            self.logger.info("Saving current: %s", target)

    def resume_checkpoint(self, resume_file):
        checkpoint = load_checkpoint(str(resume_file), map_location=self.device)
        self.saved_model_file = str(resume_file)
        self.start_epoch = checkpoint["epoch"] + 1
        self.cur_step = checkpoint["cur_step"]
        self.best_valid_score = checkpoint["best_valid_score"]
        if checkpoint["config"]["model"].lower() != self.config["model"].lower():
            self.logger.warning(
                "Checkpoint %s was trained with model %s, not %s; loading its state dict may fail.",
                resume_file,
                checkpoint["config"]["model"],
                self.config["model"],
            )
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.logger.info("Checkpoint loaded. Resume training from epoch %d", self.start_epoch)

    def load_best(self, model_file=None):
        """Load the best checkpoint written by ``fit`` (or ``model_file``) into the model."""
        checkpoint_file = model_file or self.saved_model_file
        if self._distributed():
            torch.distributed.barrier()  # rank 0 may still be writing the best checkpoint
        checkpoint = load_checkpoint(checkpoint_file, map_location=self.device)
        self.model.load_state_dict(checkpoint["state_dict"])
        self.model.load_other_parameter(checkpoint.get("other_parameter"))
        self.logger.info("Loading model structure and parameters from %s", checkpoint_file)

    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if not eval_data:
            return None
        if load_best_model:
            self.load_best(model_file)
        return super().evaluate(
            eval_data, load_best_model=False, model_file=None, show_progress=show_progress
        )


_COMPAT_CACHE: dict = {}


def make_compatible(trainer_cls):
    """Return ``trainer_cls`` with :class:`CompatTrainerMixin` in front of it (cached)."""
    from recbole.trainer import Trainer as RecBoleTrainer

    # Only torch trainers save/load torch checkpoints (XGBoost/LightGBM trainers do not).
    if issubclass(trainer_cls, CompatTrainerMixin) or not issubclass(trainer_cls, RecBoleTrainer):
        return trainer_cls
    if trainer_cls not in _COMPAT_CACHE:
        _COMPAT_CACHE[trainer_cls] = type(trainer_cls.__name__, (CompatTrainerMixin, trainer_cls), {})
    return _COMPAT_CACHE[trainer_cls]


def grid_search(new_ids, domain, trials, seed, names, sizes=None, points=None):
    """Deterministic exhaustive search, a hyperopt ``algo``.

    RecBole 1.2.1's ``exhaustive_search`` samples the grid with a ``numpy.random.RandomState``,
    which hyperopt >= 0.2.7 no longer accepts (it calls ``rng.integers``). This enumerates the
    grid of ``hp.choice`` indices in order instead, skipping points already tried. ``points`` (index
    tuples over ``names``) replaces the full grid of ``sizes`` by a subset, tried in the given order
    (``run_hyper.py --budget``).
    """
    import itertools

    from hyperopt.base import miscs_update_idxs_vals

    seen = {tuple(t["misc"]["vals"][n][0] for n in names) for t in trials.trials}
    grid = itertools.product(*(range(s) for s in sizes)) if points is None else points
    remaining = (p for p in grid if p not in seen)
    docs = []
    for new_id in new_ids:
        point = next(remaining, None)
        if point is None:
            break
        misc = dict(tid=new_id, cmd=domain.cmd, workdir=domain.workdir)
        miscs_update_idxs_vals([misc], {n: [new_id] for n in names}, {n: [v] for n, v in zip(names, point)})
        docs.extend(trials.new_trial_docs([new_id], [None], [domain.new_result()], [misc]))
    return docs


def hyper_tuning_class():
    """RecBole's ``HyperTuning`` with :func:`grid_search` as its exhaustive algorithm."""
    from functools import partial

    from recbole.trainer.hyper_tuning import HyperTuning, _spacesize, _validate_space_exhaustive_search

    class CompatHyperTuning(HyperTuning):
        def __init__(self, objective_function, algo="exhaustive", **kwargs):
            super().__init__(objective_function, algo=algo, **kwargs)
            if algo == "exhaustive":
                _validate_space_exhaustive_search(self.space)
                names = sorted(self.space)
                sizes = [_spacesize({n: self.space[n]}) for n in names]
                self.algo = partial(grid_search, names=names, sizes=sizes)

    return CompatHyperTuning
