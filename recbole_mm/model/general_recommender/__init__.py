"""recbole_mm's general (user-item) recommenders, one file per model."""

from recbole_mm.model.general_recommender.freedom import FREEDOM
from recbole_mm.model.general_recommender.vbpr import VBPR

#: registry read by recbole_mm.utils.get_model
MODELS = {cls.__name__: cls for cls in (VBPR, FREEDOM)}

__all__ = list(MODELS)
