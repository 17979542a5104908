"""Trainer options: Mirror Gradient (WWW'24) by hand and in real trainings; MMRec's learning-rate decay."""

from types import SimpleNamespace

import pytest
import torch

from recbole_mm.quick_start import run_recbole_mm
from recbole_mm.trainer import MirrorGradient


def _recbole_loop(trainer, loss_func, batches):
    """What RecBole's _train_epoch does with the loss of each batch."""
    logged = []
    for batch in batches:
        trainer.optimizer.zero_grad()
        losses = loss_func(batch)
        loss = sum(losses) if isinstance(losses, tuple) else losses
        logged.append(float(loss))
        loss.backward()
        trainer.optimizer.step()
    return logged


@pytest.mark.parametrize("as_tuple", [False, True])
def test_two_steps_by_hand(as_tuple):
    """L(theta) = 0.5 * c * theta^2 with SGD (lr 0.1): a mirrored batch moves theta to
    theta1 = theta0 (1 - lr a1 c), then theta2 = theta1 (1 + lr a2 c); the others plain descent."""
    theta = torch.nn.Parameter(torch.tensor([2.0]))
    model = torch.nn.Module()
    model.theta = theta
    trainer = SimpleNamespace(model=model, optimizer=torch.optim.SGD([theta], lr=0.1), clip_grad_norm=None)

    def loss(c):
        value = 0.5 * c * theta.pow(2).sum()
        return (0.5 * value, 0.5 * value) if as_tuple else value

    mg = MirrorGradient(trainer, loss, alpha1=1.0, alpha2=0.3, beta=2)
    logged = _recbole_loop(trainer, mg, [1.0, 1.0, 2.0])
    t0 = 2.0
    t1 = t0 * (1 - 0.1 * 1.0 * 1.0)          # batch 0: descent on alpha1 * L ...
    t2 = t1 * (1 + 0.1 * 0.3 * 1.0)          # ... then the mirrored ascent on -alpha2 * L(theta1)
    t3 = t2 * (1 - 0.1 * 1.0)                # batch 1: plain
    t4 = t3 * (1 - 0.1 * 1.0 * 2.0) * (1 + 0.1 * 0.3 * 2.0)  # batch 2 (c = 2): mirrored again
    assert theta.item() == pytest.approx(t4, rel=1e-6)
    # the logged loss of a mirrored batch is its first pass's, at the parameters it started from
    assert logged == pytest.approx([0.5 * t0**2, 0.5 * t2**2, 0.5 * 2.0 * t3**2], rel=1e-6)


def test_beta_must_be_positive():
    with pytest.raises(ValueError, match="mirror_beta"):
        MirrorGradient(SimpleNamespace(), lambda batch: batch, 1.0, 0.1, 0)


@pytest.mark.parametrize("model", ["FREEDOM", "LightGCN"])
def test_trains_plugin_and_builtin_models(tiny_dataset, run_config, model):
    data_path, name = tiny_dataset
    cfg = dict(run_config, data_path=data_path, epochs=2)
    plain = run_recbole_mm(model, name, config_dict=cfg, print_result=False)
    mirrored = dict(cfg, mirror_gradient=True, mirror_beta=1, mirror_alpha2=0.3)
    first = run_recbole_mm(model, name, config_dict=mirrored, print_result=False)
    second = run_recbole_mm(model, name, config_dict=mirrored, print_result=False)
    assert first["test_result"] == second["test_result"]  # same seed, same numbers
    assert first["best_valid_result"] != plain["best_valid_result"] or \
        first["test_result"] != plain["test_result"]


def test_learning_rate_decay(tiny_dataset, run_config):
    """learning_rate_scheduler [gamma, epochs]: the rate after e epochs is lr * gamma ** (e / epochs)."""
    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset, data_preparation
    from recbole_mm.utils import get_model, get_trainer

    data_path, name = tiny_dataset
    config = Config("LightGCN", name, config_dict=dict(run_config, data_path=data_path,
                                                       learning_rate_scheduler=[0.5, 2], learning_rate=0.01))
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    model = get_model("LightGCN")(config, train.dataset)
    trainer = get_trainer(config["MODEL_TYPE"], "LightGCN")(config, model)
    for epoch in range(3):
        trainer._train_epoch(train, epoch)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * 0.5 ** (3 / 2))
    with pytest.raises(ValueError, match="learning_rate_scheduler"):
        get_trainer(config["MODEL_TYPE"], "LightGCN")(Config("LightGCN", name, config_dict=dict(
            run_config, data_path=data_path, learning_rate_scheduler=[0.0, 50])), model)
