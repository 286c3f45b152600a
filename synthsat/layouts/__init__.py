"""Layout sources: new land-cover masks that look like a data set's training masks
(issue 30), written as a mask data folder that ``synthesize`` and the data readers take
unchanged.

* :mod:`~synthsat.layouts.training` — the training masks, read as class indices.
* :mod:`~synthsat.layouts.geometry` — flips / quarter turns, random crops, mosaics.
* :mod:`~synthsat.layouts.components` — class polygons (4-connected components), the
  classes each class borders.
* :mod:`~synthsat.layouts.recombine` — ``method=recombine``: masks from the training
  masks' pieces (no learning).
* :mod:`~synthsat.layouts.learned` — ``method=learned``: a small VAE of one-hot masks.
* :mod:`~synthsat.layouts.writer` — the layouts folder (masks, placeholder images,
  splits, record).
* :mod:`~synthsat.layouts.job` — the entry point, ``python -m synthsat.layouts``.

The layout metrics are :mod:`synthsat.metrics.layout`.
"""

from synthsat.layouts.job import main

__all__ = ["main"]
