"""Synthesis: georeferenced synthetic image tiles from land-cover masks and a generator.

* :mod:`~synthsat.synthesis.requests` — which tiles to make (:class:`TileRequest`,
  :func:`make_requests`) and the seed of each (:func:`derive_seed`).
* :mod:`~synthsat.synthesis.windows` — chip grids and blend weights.
* :mod:`~synthsat.synthesis.writer` — atomic, streaming GeoTIFF output.
* :mod:`~synthsat.synthesis.synthesizer` — what every synthesiser shares: the
  :class:`Synthesizer` protocol, checks, :func:`write_tile`, provenance, runs.
* :mod:`~synthsat.synthesis.gan_synthesizer` — the GAN path: streaming synthesis of a
  tile with a chip generator (:class:`TileSynthesizer`).
* :mod:`~synthsat.synthesis.scaled` — synthesis at a generator's ``data.scale``: masks
  and style images on the grid the generator was trained on.
* :mod:`~synthsat.synthesis.texture_bank` and :mod:`~synthsat.synthesis.classtexture`
  — control without training: real texture of each mask class, blended.
* :mod:`~synthsat.synthesis.predict` — synthesis as Lightning ``predict`` (DDP-ready).

Output names, provenance and the manifest are :mod:`synthsat.data.synthetic_tiles`'
(re-exported here: :func:`output_name`, :func:`read_provenance`, :func:`write_manifest`).
"""

from synthsat.data.synthetic_tiles import (
    MANIFEST,
    PROVENANCE_TAG,
    output_name,
    read_provenance,
    write_manifest,
)
from synthsat.synthesis.classtexture import ClassTextureSynthesizer
from synthsat.synthesis.gan_synthesizer import ChipGenerator, TileSynthesizer
from synthsat.synthesis.predict import (
    SynthesisModule,
    SynthesisWriter,
    TaskChipGenerator,
    load_chip_generator,
    run_synthesis,
)
from synthsat.synthesis.requests import TileRequest, derive_seed, make_requests
from synthsat.synthesis.synthesizer import Synthesizer, SynthesizerBase, write_tile
from synthsat.synthesis.texture_bank import TextureBank, build_bank
from synthsat.synthesis.windows import ChipGrid, chip_starts, taper
from synthsat.synthesis.writer import AtomicTileWriter

__all__ = [
    "MANIFEST",
    "PROVENANCE_TAG",
    "AtomicTileWriter",
    "ChipGenerator",
    "ChipGrid",
    "ClassTextureSynthesizer",
    "SynthesisModule",
    "SynthesisWriter",
    "Synthesizer",
    "SynthesizerBase",
    "TaskChipGenerator",
    "TextureBank",
    "TileRequest",
    "TileSynthesizer",
    "build_bank",
    "chip_starts",
    "derive_seed",
    "load_chip_generator",
    "make_requests",
    "output_name",
    "read_provenance",
    "run_synthesis",
    "taper",
    "write_manifest",
    "write_tile",
]
