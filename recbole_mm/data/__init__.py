from recbole_mm.data.dataset import MultimodalDataset
from recbole_mm.data.utils import create_dataset, data_preparation

__all__ = ["MultimodalDataset", "create_dataset", "data_preparation"]
