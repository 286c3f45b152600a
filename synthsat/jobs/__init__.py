"""The Hydra entry points, one module per job, and the plumbing they share.

* :mod:`~synthsat.jobs.train_generator`, :mod:`~synthsat.jobs.synthesize`,
  :mod:`~synthsat.jobs.train_segmentation`, :mod:`~synthsat.jobs.evaluate`,
  :mod:`~synthsat.jobs.evaluate_synthetic` — one job each (``conf/<job>.yaml``);
* :mod:`~synthsat.jobs.pipeline` — the whole study as one resumable job (its stages are
  run by :mod:`synthsat.study`);
* :mod:`~synthsat.jobs.runtime`, :mod:`~synthsat.jobs.user_errors`,
  :mod:`~synthsat.jobs.output_checks`, :mod:`~synthsat.jobs.interrupts` — what every job
  shares (no job imports another).

Users and the study's stages run them by their old names, ``python -m synthsat.<job>``
(thin modules at ``synthsat/<job>.py``; a stage's key hashes that name).
"""
