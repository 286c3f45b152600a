"""Moved to :mod:`synthsat.study.stage_job`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.study import stage_job as _module

sys.modules[__name__] = _module
