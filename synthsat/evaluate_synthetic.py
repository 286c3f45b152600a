"""``python -m synthsat.evaluate_synthetic`` runs the job :mod:`synthsat.jobs.evaluate_synthetic`.

This name stays for users' commands and for the study's stages, whose keys hash it
(:class:`synthsat.study.stages.Stage`). Imported, it is that module itself.
"""

import sys

from synthsat.jobs import evaluate_synthetic as _job

if __name__ == "__main__":
    _job.main()
else:
    sys.modules[__name__] = _job
