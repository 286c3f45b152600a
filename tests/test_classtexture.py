"""The class-texture control: its bank, its blending and the synthesis job with it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import RECORD_HEAD, assert_on_toy_masks, compose_synthesize
from hydra.errors import ConfigCompositionException
from rasterio.transform import from_origin

from synthsat.errors import ConfigError
from synthsat.jobs.synthesize import run
from synthsat.synthesis import make_requests
from synthsat.synthesis.classtexture import (
    ClassTextureSynthesizer,
    TextureBank,
    build_bank,
    dihedral_offsets,
    synthesize_mask,
)

A = (10, 120, 250)
B = (200, 30, 60)


def _constant(colour: tuple[int, ...], n: int = 1, size: int = 8) -> np.ndarray:
    """``n`` constant ``(C, size, size)`` uint8 patches of ``colour``."""
    return np.broadcast_to(
        np.asarray(colour, np.uint8)[None, :, None, None], (n, len(colour), size, size)
    ).copy()


def _blocks(height: int, width: int, values: list[int], seed: int = 0) -> np.ndarray:
    """A mask of 5 x 7 px blocks of random ``values``."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(values, size=(height // 5 + 1, width // 7 + 1))
    return np.repeat(np.repeat(coarse, 5, 0), 7, 1)[:height, :width].astype(np.uint8)


def test_constant_textures_fill_their_classes_exactly() -> None:
    # classes 1 and 2 (0 is the ignore index: never a texture, filled with the class of
    # most patches, here 2)
    bank = TextureBank.from_patches({1: _constant(A), 2: _constant(B, 2)}, 3, ignore_index=0)
    mask = _blocks(45, 61, [0, 1, 2])
    out = synthesize_mask(mask, bank, seed=3)
    assert out.shape == (3, 45, 61) and out.dtype == np.uint8
    assert np.array_equal(out[:, mask == 1].T, np.tile(A, ((mask == 1).sum(), 1)))
    assert np.array_equal(out[:, mask == 2].T, np.tile(B, ((mask == 2).sum(), 1)))
    assert np.array_equal(out[:, mask == 0].T, np.tile(B, ((mask == 0).sum(), 1)))
    assert bank.fill_class == 2


def test_an_ignore_index_outside_the_classes() -> None:
    bank = TextureBank.from_patches({0: _constant(A), 1: _constant(B)}, 2, 255, fill_class=0)
    mask = np.array([[0, 1, 255]] * 9, np.uint8)
    out = synthesize_mask(mask, bank, seed=0)
    assert out[:, 0, :].T.tolist() == [list(A), list(B), list(A)]
    with pytest.raises(Exception, match="outside the class list"):
        synthesize_mask(np.full((4, 4), 7, np.uint8), bank, seed=0)


def test_seeded_and_varied() -> None:
    rng = np.random.default_rng(1)
    patches = {0: rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)}
    patches[1] = rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    bank = TextureBank.from_patches(patches, 2, None)
    mask = _blocks(40, 40, [0, 1])
    first = synthesize_mask(mask, bank, seed=11)
    assert np.array_equal(first, synthesize_mask(mask, bank, seed=11))
    other = synthesize_mask(mask, bank, seed=12)
    assert (first != other).mean() > 0.5


def test_blending_has_no_seams() -> None:
    # one class, two constant patches 0 and 200 on a 16 px grid with 8 px overlap: a
    # hard tiling would jump by 200 at chip edges; the raised-cosine blend changes by at
    # most 200 * (pi / 16) between neighbours (the weights' steepest step)
    bank = TextureBank.from_patches(
        {0: np.concatenate([_constant((0,), size=16), _constant((200,), size=16)])}, 1, None
    )
    out = synthesize_mask(np.zeros((64, 64), np.uint8), bank, seed=5, dtype="float32")[0]
    steps = max(np.abs(np.diff(out, axis=0)).max(), np.abs(np.diff(out, axis=1)).max())
    assert steps <= 200 * np.pi / 16 + 1e-3
    assert out.min() < 50 and out.max() > 150  # both patches are used
    assert out.min() >= 0 and out.max() <= 200 + 1e-3  # convex combinations


def test_output_dtype_is_the_banks_or_given() -> None:
    patches = {0: np.full((1, 2, 4, 4), 1000, np.uint16)}
    bank = TextureBank.from_patches(patches, 1, None)
    mask = np.zeros((5, 9), np.uint8)
    assert synthesize_mask(mask, bank, 0).dtype == np.uint16
    clipped = synthesize_mask(mask, bank, 0, dtype="uint8")
    assert clipped.dtype == np.uint8 and (clipped == 255).all()
    assert (synthesize_mask(mask, bank, 0) == 1000).all()


def test_dihedral_offsets_are_the_eight_symmetries() -> None:
    patch = np.arange(16).reshape(4, 4)
    got = {tuple(patch.ravel()[o].ravel()) for o in dihedral_offsets(4)}
    want = {tuple(np.rot90(p, k).ravel()) for p in (patch, patch.T) for k in range(4)}
    assert got == want and len(got) == 8
    assert np.array_equal(dihedral_offsets(4)[0].ravel(), np.arange(16))


def _tiles() -> list[tuple[np.ndarray, np.ndarray]]:
    """A pure class-0 tile (image 7) and a tile 80 % class 0, 20 % class 1 (image 200)."""
    pure = (np.full((3, 8, 8), 7, np.uint8), np.zeros((8, 8), np.uint8))
    mixed_mask = np.zeros((8, 8), np.uint8)
    mixed_mask.ravel()[51:] = 1  # 51 / 64 = 79.7 % class 0
    mixed = (np.full((3, 8, 8), 200, np.uint8), mixed_mask)
    return [pure, mixed]


def test_bank_purity_rule_and_fallbacks(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        bank = build_bank(_tiles(), 2, None, patch_size=8, purity=0.9, fallback_purity=0.5)
    zero = bank.patches[bank.start[0] : bank.start[0] + bank.count[0]]
    assert bank.count[0] == 1 and (zero == 7).all()  # the 80 % patch is not class 0's
    one = bank.patches[bank.start[1] : bank.start[1] + bank.count[1]]
    assert bank.count[1] == 1 and (one == 200).all()  # class 1's mean colour
    assert bank.sources == {0: "purity>=0.9", 1: "mean colour"}
    assert bank.fill_class == 0 and bank.patches.shape == (2, 8, 8, 3)
    assert "class 1" in caplog.text and "mean colour" in caplog.text
    lower = build_bank(_tiles(), 2, None, patch_size=8, purity=0.9, fallback_purity=0.75)
    assert lower.sources[0] == "purity>=0.9" and lower.count[0] == 1
    loose = build_bank(_tiles(), 2, None, patch_size=8, purity=0.75)
    assert loose.count[0] == 2
    assert sorted(loose.patches[:2, 0, 0, 0].tolist()) == [7, 200]


def test_bank_fallback_purity_and_ignore_index() -> None:
    image, mask = _tiles()[1]
    bank = build_bank([(image, mask)], 3, 2, patch_size=8, purity=0.9, fallback_purity=0.75)
    assert bank.sources[0] == "purity>=0.75" and bank.count[0] == 1
    assert 2 not in bank.sources  # the ignore index is never a texture class
    assert bank.count[2] == bank.count[0]  # its pixels take the fill class's texture


def test_bank_caps_and_seeds_its_choice() -> None:
    rng = np.random.default_rng(0)
    tiles = [(rng.integers(0, 256, (3, 64, 64), dtype=np.uint8), np.zeros((64, 64), np.uint8))]
    bank = build_bank(tiles, 1, None, patch_size=16, per_class=5, seed=1)
    assert bank.count.tolist() == [5]
    again = build_bank(tiles, 1, None, patch_size=16, per_class=5, seed=1)
    assert np.array_equal(bank.patches, again.patches)
    # each patch is a real window of the image
    img = tiles[0][0].transpose(1, 2, 0)
    windows = {img[y : y + 16, x : x + 16].tobytes() for y in range(49) for x in range(49)}
    assert all(p.tobytes() in windows for p in bank.patches)


def _write_mask(path: Path, mask: np.ndarray) -> Path:
    profile = dict(
        driver="GTiff",
        width=mask.shape[1],
        height=mask.shape[0],
        count=1,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(500000, 4000000, 0.5, 0.5),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(mask, 1)
    return path


def test_synthesizer_streams_what_synthesize_mask_makes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    bank = TextureBank.from_patches(
        {k: rng.integers(0, 256, (3, 3, 16, 16), dtype=np.uint8) for k in (1, 2)}, 3, 0
    )
    mask = _blocks(300, 70, [0, 1, 2])  # taller than one 256-row block
    path = _write_mask(tmp_path / "m.tif", mask)
    (request,) = make_requests([("m", path, None)], tmp_path / "out", 1, seed=9)
    synth = ClassTextureSynthesizer(bank, 3, 0, dtype="uint8", band_names=["r", "g", "b"])
    record = synth.run(request)
    assert record is not None and record["generator"] == "classtexture"
    assert synth.run(request) is None  # exists: skipped
    with rasterio.open(request.output) as dst, rasterio.open(path) as src:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert np.array_equal(dst.read(), synthesize_mask(mask, bank, request.tile_seed))
        assert np.array_equal(dst.read_masks(1) > 0, mask != 0)  # ignore pixels hidden


def test_command_with_class_textures(toy_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "texture"
    cfg = compose_synthesize(
        toy_root,
        tmp_path,
        "method=classtexture",
        f"out={out}",
        "samples=2",
        "seed=3",
        "classtexture.patch_size=32",
    )
    result = run(cfg)  # type: ignore[arg-type]
    names = sorted(p.name for p in out.glob("*.tif"))
    assert names == ["tile_000_s0.tif", "tile_000_s1.tif", "tile_001_s0.tif", "tile_001_s1.tif"]
    assert (result["tiles_written"], result["tiles_skipped"]) == (4, 0)
    assert result["out_dir"] == str(out)
    assert_on_toy_masks(out, names, toy_root)
    with rasterio.open(out / names[0]) as a, rasterio.open(out / names[1]) as b:
        assert not np.array_equal(a.read(), b.read())  # samples differ
    manifest = json.loads((out / "manifest.json").read_text())["outputs"]
    assert [m["path"] for m in manifest] == names
    assert {(m["generator"], m["lambda_div"], m["checkpoint"], m["seed"]) for m in manifest} == {
        ("classtexture", None, None, 3)
    }
    assert manifest[0]["texture"] == {
        "patch_size": 32,
        "purity": 0.9,
        "fallback_purity": 0.5,
        "per_class": 256,
        "texture_splits": ["train"],
    }
    assert (manifest[0]["chip_size"], manifest[0]["overlap"]) == (32, 16)
    again = run(cfg)  # type: ignore[arg-type]
    assert (again["tiles_written"], again["tiles_skipped"]) == (0, 4)


def test_generator_method_still_needs_a_checkpoint(toy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="method=generator needs"):
        run(compose_synthesize(toy_root, tmp_path))
    # refused as the config is composed (synthsat/schemas.py), naming the key
    for bad, key in (("method=gan", "method"), ("classtexture.purity=0", "classtexture.purity")):
        with pytest.raises(ConfigCompositionException) as err:
            compose_synthesize(toy_root, tmp_path, "method=classtexture", bad)
        assert f"full_key: {key}\n" in str(err.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="classtexture.per_class=2.5"):
        compose_synthesize(toy_root, tmp_path, "method=classtexture", "classtexture.per_class=2.5")
    assert not (tmp_path / "run").exists()  # refused before the run starts


def test_record_fields_and_order() -> None:
    from synthsat.synthesis import SynthesizerBase

    bank = TextureBank.from_patches({1: _constant(A), 2: _constant(B)}, 3, ignore_index=0)
    synth = ClassTextureSynthesizer(bank, 3, 0, dtype="uint8", provenance={"texture": {"k": 1}})
    assert isinstance(synth, SynthesizerBase)
    (request,) = make_requests([("m", Path("m.tif"), None)], "out", 1, seed=9)
    record = synth.record(request)
    fields = ["chip_size", "overlap", "generator", "checkpoint", "lambda_div", "texture"]
    assert list(record) == [*RECORD_HEAD, *fields]
    assert {k: record[k] for k in list(record)[6:]} == {
        "chip_size": bank.patch_size,
        "overlap": bank.patch_size // 2,
        "generator": "classtexture",
        "checkpoint": None,
        "lambda_div": None,
        "texture": {"k": 1},
    }
