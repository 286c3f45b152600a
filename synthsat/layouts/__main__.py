"""``python -m synthsat.layouts``: see :mod:`synthsat.layouts.job`."""

from synthsat.layouts.job import main

if __name__ == "__main__":
    main()
