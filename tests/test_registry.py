import pytest

from recbole_mm.compat import CompatTrainerMixin
from recbole_mm.model.general_recommender import VBPR
from recbole_mm.utils import canonical_model_name, get_model, get_trainer, model_names, plugin_models


@pytest.mark.parametrize("name", ["VBPR", "vbpr", "Vbpr"])
def test_plugin_model_case_insensitive(name):
    assert get_model(name) is VBPR


@pytest.mark.parametrize("name,expected", [("LightGCN", "LightGCN"), ("LIGHTGCN", "LightGCN"),
                                           ("itemknn", "ItemKNN"), ("bpr", "BPR")])
def test_recbole_models_case_insensitive(name, expected):
    cls = get_model(name)
    assert cls.__name__ == expected and cls.__module__.startswith("recbole.model")
    assert canonical_model_name(name) == expected


def test_unknown_model_lists_available():
    with pytest.raises(ValueError) as err:
        get_model("NoSuchModel")
    msg = str(err.value)
    assert "NoSuchModel" in msg and "VBPR" in msg and "FREEDOM" in msg and "LightGCN" in msg and "NGCF" in msg


def test_plugin_models_come_first():
    from recbole_mm.model.general_recommender import discover

    names = model_names()
    plugin = sorted(plugin_models())
    assert set(discover()) <= set(plugin) and len(plugin) >= 8
    assert names[: len(plugin)] == plugin and "LightGCN" in names[len(plugin):]


def test_get_trainer():
    from recbole.trainer import NCLTrainer
    from recbole.utils import ModelType

    import recbole_mm.trainer as ours

    general = get_trainer(ModelType.GENERAL, "vbpr")
    assert issubclass(general, ours.Trainer) and issubclass(general, CompatTrainerMixin)
    ncl = get_trainer(ModelType.GENERAL, "NCL")
    assert issubclass(ncl, NCLTrainer) and issubclass(ncl, CompatTrainerMixin)
    assert issubclass(get_trainer(ModelType.TRADITIONAL, "ItemKNN"), ours.TraditionalTrainer)
