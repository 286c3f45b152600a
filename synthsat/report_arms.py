"""Moved to :mod:`synthsat.report.arms`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.report import arms as _module

sys.modules[__name__] = _module
