# Metadata lives in pyproject.toml; this file only tells setuptools about the
# cffi extension (minigrad._C), which pip compiles from csrc/ at install time.
from setuptools import setup

setup(cffi_modules=["minigrad/_build.py:ffibuilder"])
