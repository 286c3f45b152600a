"""Synthesis: georeferenced synthetic image tiles from land-cover masks and a generator.

* :mod:`~synthsat.synthesis.windows` — chip grids and blend weights.
* :mod:`~synthsat.synthesis.writer` — atomic, streaming GeoTIFF output and the manifest.
* :mod:`~synthsat.synthesis.tile_job` — streaming synthesis of one tile.
* :mod:`~synthsat.synthesis.predict` — the same as Lightning ``predict`` (DDP-ready).
* :mod:`~synthsat.synthesis.classtexture` — control without training: real texture of
  each mask class, blended.
"""

from synthsat.synthesis.predict import (
    SynthesisModule,
    SynthesisWriter,
    TaskChipGenerator,
    load_chip_generator,
    run_synthesis,
)
from synthsat.synthesis.tile_job import (
    ChipGenerator,
    Synthesizer,
    TileRequest,
    TileSynthesizer,
    derive_seed,
    make_requests,
    output_name,
    write_tile,
)
from synthsat.synthesis.windows import ChipGrid, chip_starts, taper
from synthsat.synthesis.writer import AtomicTileWriter, read_provenance, write_manifest

__all__ = [
    "AtomicTileWriter",
    "ChipGenerator",
    "ChipGrid",
    "SynthesisModule",
    "SynthesisWriter",
    "Synthesizer",
    "TaskChipGenerator",
    "TileRequest",
    "TileSynthesizer",
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
