"""The table of expected errors names real classes, and every error class of the core is in it."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import deepspeech_core
from deepspeech_core.error_kinds import _KINDS, error_kind

pytestmark = pytest.mark.unit  # `make test-fast`


def test_every_listed_error_class_exists():
    for dotted in _KINDS:
        module, _, name = dotted.rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        assert inspect.isclass(cls), f"{dotted} in error_kinds._KINDS is not a class"
        assert issubclass(cls, BaseException), dotted


def test_every_error_the_core_defines_has_a_kind():
    """A new error class with a message for the user must say how the CLI reports it."""
    missing = []
    for info in pkgutil.walk_packages(deepspeech_core.__path__, "deepspeech_core."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == info.name and issubclass(cls, Exception):
                if error_kind(cls.__new__(cls)) is None:
                    missing.append(f"{cls.__module__}.{cls.__qualname__}")
    assert missing == []
