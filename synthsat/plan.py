"""Moved to :mod:`synthsat.study.plan`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.study import plan as _module

sys.modules[__name__] = _module
