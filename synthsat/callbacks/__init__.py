"""Lightning callbacks of the training jobs (configured in ``conf/callbacks/``).

* :class:`GeneratorSamples` — the generator's sample grids during training.
* :class:`SegmentationTestReport` — a segmentation test's confusion matrix and panels (W&B).
* :class:`ProgressLog` — a log line every N training steps when there is no progress bar.
* :func:`step_progress_bar` — the progress bar on a terminal, counting steps under a step
  budget (:class:`StepRichProgressBar`, or :class:`StepTQDMProgressBar` without rich).
* :class:`ValidationCurve` — every validation's score by step (a run's learning curve).
* :class:`StopOnSigterm` — training stops after the step in progress on SIGTERM (added
  to every job's trainer by :func:`synthsat.jobs.runtime.build_trainer`).

In :mod:`~synthsat.callbacks.images` (the first two), :mod:`~synthsat.callbacks.progress`
(the progress line and bars) and :mod:`~synthsat.callbacks.training` (the last two); the
configs name them from here (``_target_: synthsat.callbacks.ProgressLog``: a stage's key
hashes that string). The checkpoint callbacks live in :mod:`synthsat.tasks.checkpoints`.
"""

from synthsat.callbacks.images import GeneratorSamples, SegmentationTestReport
from synthsat.callbacks.progress import (
    ProgressLog,
    StepRichProgressBar,
    StepTQDMProgressBar,
    progress_line,
    step_budget,
    step_progress_bar,
    train_description,
)
from synthsat.callbacks.training import StopOnSigterm, ValidationCurve

__all__ = [
    "GeneratorSamples",
    "ProgressLog",
    "SegmentationTestReport",
    "StepRichProgressBar",
    "StepTQDMProgressBar",
    "StopOnSigterm",
    "ValidationCurve",
    "progress_line",
    "step_budget",
    "step_progress_bar",
    "train_description",
]
