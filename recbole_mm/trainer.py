"""Trainers that differ from RecBole's.

:class:`Trainer` is RecBole's training loop plus two things multimodal models need:

* a per-epoch hook, ``model.pre_epoch_processing()``, called before each training epoch (FREEDOM
  and USERec resample their degree-pruned user-item graph there; LATTICE refreshes its learned
  item graph);
* an epoch log (``trainer.epoch_log``: seconds per training epoch, per evaluation and the validation
  result) that the CLI and the benchmark harness report;
* Mirror Gradient (``mirror_gradient: True``), a training option for every model this trainer runs,
  RecBole's built-ins included (:class:`MirrorGradient`);
* MMRec's exponential learning-rate decay, ``learning_rate_scheduler: [gamma, epochs]``: the rate
  after ``e`` training epochs is ``learning_rate * gamma ** (e / epochs)`` (``~``: constant).

RecBole's checkpoint loading is made torch>=2.6-safe by :mod:`recbole_mm.compat`, which
:func:`recbole_mm.utils.get_trainer` mixes into every trainer it returns.
"""

from __future__ import annotations

from time import perf_counter

from recbole.trainer import Trainer as RecBoleTrainer
from torch import optim
from torch.nn.utils import clip_grad_norm_

from recbole_mm.compat import CompatTrainerMixin
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.runtime import log_once, tune_cpu_allocator


class MirrorGradient:
    """Mirror Gradient (Zhong et al., "Mirror Gradient: Towards Robust Multimodal Recommender Systems
    via Exploring Flat Local Minima", WWW'24), as a wrapper of the model's loss that RecBole's
    training loop calls in place of ``calculate_loss``.

    Every ``beta``-th batch of an epoch (the first, then every ``beta``), the batch takes two steps
    : a descent step on ``alpha1 * L(theta)``, then, on the same batch and its
    same negatives, a mirrored ascent step on ``-alpha2 * L(theta')`` at the updated parameters. The
    net move is descent with a correction against directions where the loss rises sharply, which
    steers training towards flat minima. Other batches train as usual. As the official code (MMRec's
    trainer) the optimizer steps on the scaled losses themselves (with Adam the scale mostly cancels),
    and the epoch's logged loss is the first pass's.

    The first step happens here; the returned loss carries the first pass's value and the mirrored
    pass's gradient, so RecBole's loop (backward, clipping, step) performs the second step unchanged.
    """

    def __init__(self, trainer, loss_func, alpha1: float, alpha2: float, beta: int):
        if beta < 1:
            raise ValueError(f"mirror_beta must be a positive integer of batches, got {beta}")
        self.trainer, self.loss_func = trainer, loss_func
        self.alpha1, self.alpha2, self.beta = float(alpha1), float(alpha2), int(beta)
        self.batch = 0

    def __call__(self, interaction):
        batch, self.batch = self.batch, self.batch + 1
        if batch % self.beta:
            return self.loss_func(interaction)
        trainer = self.trainer
        first = self.loss_func(interaction)
        (self.alpha1 * _total(first)).backward()
        if trainer.clip_grad_norm:
            clip_grad_norm_(trainer.model.parameters(), **trainer.clip_grad_norm)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
        second = self.loss_func(interaction)
        if isinstance(first, tuple):
            return tuple(self._mirrored(a, b) for a, b in zip(first, second))
        return self._mirrored(first, second)

    def _mirrored(self, first, second):
        ascent = -self.alpha2 * second
        return first.detach() + (ascent - ascent.detach())


def _total(losses):
    return sum(losses) if isinstance(losses, tuple) else losses


class Trainer(CompatTrainerMixin, RecBoleTrainer):
    def __init__(self, config, model):
        if config["cpu_allocator_tuning"] and str(config["device"]).startswith("cpu"):
            mb = config["cpu_mmap_threshold_mb"]
            tune_cpu_allocator() if mb is None else tune_cpu_allocator(int(mb) << 20)
        super().__init__(config, model)
        self.epoch_log = []
        self.lr_scheduler = None
        schedule = config["learning_rate_scheduler"]
        if schedule is not None:
            gamma, period = (float(v) for v in schedule)
            if not (gamma > 0 and period > 0):
                raise ValueError(f"learning_rate_scheduler must be [gamma > 0, epochs > 0], got {schedule}")
            self.lr_scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: gamma ** (epoch / period))

    def _build_optimizer(self, **kwargs):
        """RecBole's optimizer choice, with Adam/AdamW using torch's fused kernel (one pass over each
        parameter, no temporaries: ~8x faster than the default on CPU for feature-sized tables,
        same update rule)."""
        learner = kwargs.get("learner", self.learner)
        if learner.lower() not in ("adam", "adamw") or kwargs.get("params") is not None:
            return super()._build_optimizer(**kwargs)
        cls = optim.Adam if learner.lower() == "adam" else optim.AdamW
        lr = kwargs.get("learning_rate", self.learning_rate)
        weight_decay = kwargs.get("weight_decay", self.weight_decay)
        log_once("fused_adam", "optimizer: torch %s with fused=True (one kernel per parameter; same update rule)",
                 cls.__name__)
        return cls(self.model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)

    def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        start = perf_counter()
        if isinstance(self.model, MultimodalRecommender):  # RecBole's own models have no such hook
            self.model.pre_epoch_processing()
        if self.config["mirror_gradient"]:
            if self.enable_scaler:
                raise ValueError("mirror_gradient: True does not combine with enable_scaler (mixed-precision "
                                 "loss scaling); switch one off")
            loss_func = MirrorGradient(self, loss_func or self.model.calculate_loss, self.config["mirror_alpha1"],
                                       self.config["mirror_alpha2"], self.config["mirror_beta"])
        loss = super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
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
