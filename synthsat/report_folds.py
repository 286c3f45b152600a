"""Moved to :mod:`synthsat.report.folds`;
the old name is kept for users' imports and is that module itself."""

import sys

from synthsat.report import folds as _module

if __name__ == "__main__":
    _module.main()
else:
    sys.modules[__name__] = _module
