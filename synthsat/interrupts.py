"""Moved to :mod:`synthsat.jobs.interrupts`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.jobs import interrupts as _module

sys.modules[__name__] = _module
