"""recbole_mm's general (user-item) recommenders, one file per model."""

from recbole_mm.model.general_recommender.alignrec import AlignRec
from recbole_mm.model.general_recommender.bm3 import BM3
from recbole_mm.model.general_recommender.freedom import FREEDOM
from recbole_mm.model.general_recommender.lattice import LATTICE
from recbole_mm.model.general_recommender.lgmrec import LGMRec
from recbole_mm.model.general_recommender.mgcn import MGCN
from recbole_mm.model.general_recommender.userec import USERec
from recbole_mm.model.general_recommender.vbpr import VBPR

#: registry read by recbole_mm.utils.get_model
MODELS = {cls.__name__: cls for cls in (VBPR, LATTICE, FREEDOM, BM3, MGCN, LGMRec, AlignRec, USERec)}

__all__ = list(MODELS)
