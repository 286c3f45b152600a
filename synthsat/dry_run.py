"""Moved to :mod:`synthsat.study.dry_run`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.study import dry_run as _module

sys.modules[__name__] = _module
