"""Moved to :mod:`synthsat.study.slurm`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.study import slurm as _module

sys.modules[__name__] = _module
