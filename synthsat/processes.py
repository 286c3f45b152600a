"""Moved to :mod:`synthsat.study.processes`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.study import processes as _module

sys.modules[__name__] = _module
