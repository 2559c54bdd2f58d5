"""A pytest plugin, `-p colab_lacks` (tests/ on PYTHONPATH, entry-point plugins off): the modules a learner's Colab
runtime lacks (refrag_lib.course.colab_rehearsal.modules_colab_lacks) become unimportable before the first conftest
is read, so a test file that imports one fails to collect here as it would in Colab (tests/test_colab_selection.py)."""

import sys
from importlib.abc import MetaPathFinder

import pytest

from refrag_lib.course.colab_rehearsal import modules_colab_lacks


class Lacking(MetaPathFinder):
    """First on sys.meta_path: 'no such module' for the named top-level modules and everything under them."""

    def __init__(self, modules: set[str]):
        self.modules = frozenset(modules)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in self.modules:
            raise ModuleNotFoundError(f"No module named {fullname!r}: Colab's runtime lacks it (neither in "
                                      "colab/pip-freeze.gpu.txt nor added by the notebooks' setup cell)", name=fullname)
        return None


def pytest_load_initial_conftests(early_config):
    lacking = modules_colab_lacks()
    loaded = sorted(name for name in sys.modules if name.partition(".")[0] in lacking)
    if loaded:
        raise pytest.UsageError(f"colab_lacks: {', '.join(loaded)} already imported, so they cannot be hidden; "
                                "run with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 (another plugin imported them).")
    sys.meta_path.insert(0, Lacking(lacking))
