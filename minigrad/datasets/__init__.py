"""Standard data sets, loaded as numpy arrays (Keras-style ``load_data()``)."""

from . import mnist

__all__ = ["mnist"]
