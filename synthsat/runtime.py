"""Moved to :mod:`synthsat.jobs.runtime`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.jobs import runtime as _module

sys.modules[__name__] = _module
