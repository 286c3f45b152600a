"""Moved to :mod:`synthsat.jobs.output_checks`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.jobs import output_checks as _module

sys.modules[__name__] = _module
