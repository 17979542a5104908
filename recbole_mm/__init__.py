"""recbole_mm: multimodal recommendation for RecBole."""

__version__ = "0.1.0"
