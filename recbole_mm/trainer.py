"""Trainers that differ from RecBole's.

:class:`Trainer` is RecBole's training loop plus two things multimodal models need:

* a per-epoch hook, ``model.pre_epoch_processing()``, called before each training epoch (FREEDOM
  and USERec resample their degree-pruned user-item graph there; LATTICE refreshes its learned
  item graph);
* an epoch log (``trainer.epoch_log``: seconds per training epoch, per evaluation and the validation
  result) that the CLI and the benchmark harness report.

RecBole's checkpoint loading is made torch>=2.6-safe by :mod:`recbole_mm.compat`, which
:func:`recbole_mm.utils.get_trainer` mixes into every trainer it returns.
"""

from __future__ import annotations

from time import perf_counter

from recbole.trainer import Trainer as RecBoleTrainer

from recbole_mm.compat import CompatTrainerMixin


class Trainer(CompatTrainerMixin, RecBoleTrainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.epoch_log = []

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = perf_counter()
        hook = getattr(self.model, "pre_epoch_processing", None)
        if callable(hook):
            hook()
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        self.epoch_log.append({"epoch": epoch_idx, "train_s": perf_counter() - start})
        return loss

    def _valid_epoch(self, valid_data, show_progress=False):
        start = perf_counter()
        score, result = super()._valid_epoch(valid_data, show_progress=show_progress)
        if self.epoch_log:
            self.epoch_log[-1].update(
                {"valid_s": perf_counter() - start, "valid_score": float(score), "valid_result": dict(result)}
            )
        return score, result


class TraditionalTrainer(Trainer):
    """For non-parametric models (Pop, ItemKNN): a single 'epoch' fits them."""

    def __init__(self, config, model):
        super().__init__(config, model)
        self.epochs = 1
