"""Moved to :mod:`synthsat.report.plots`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.report import plots as _module

sys.modules[__name__] = _module
