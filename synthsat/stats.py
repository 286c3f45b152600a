"""Moved to :mod:`synthsat.report.stats`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.report import stats as _module

sys.modules[__name__] = _module
