"""The study's machinery: what ``python -m synthsat.pipeline`` plans and runs.

* :mod:`~synthsat.study.plan` — the study's stages, in waves;
* :mod:`~synthsat.study.stages` — a stage (one Hydra job in its own keyed folder) and how
  it runs; :mod:`~synthsat.study.compose` composes its config (and so its key);
  :mod:`~synthsat.study.progress` numbers the stages and estimates the time left;
* :mod:`~synthsat.study.executors`, :mod:`~synthsat.study.stage_job` — stages as submitit
  jobs (local, SLURM, debug); :mod:`~synthsat.study.slurm` — the job arrays' resources;
* :mod:`~synthsat.study.processes` — stage processes that stop with the pipeline;
* :mod:`~synthsat.study.dry_run` — the plan printed with its device hours.
"""
