"""recbole_mm: multimodal recommendation for RecBole."""

__version__ = "0.1.0"


def __getattr__(name):  # ``from recbole_mm import register_model`` without importing RecBole on ``import recbole_mm``
    if name == "register_model":
        from recbole_mm.utils import register_model

        return register_model
    raise AttributeError(f"module 'recbole_mm' has no attribute {name!r}")
