"""Mutation score per module from mutmut's results (``make mutate`` runs it after mutmut).

Reads ``mutants/<module>.py.meta`` (mutmut 3), leaves out the mutants recorded as
equivalent in ``tests/mutation_equivalents.txt`` (one ``<mutant name>  # <reason>`` per
line), prints a table and writes ``mutants/score.json``. Exits 1 when a module is below
``--target`` (default 0.85) so that the make target fails visibly.

Detected = killed or timed out; missed = survived or not covered by any test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

DETECTED = {1, 3, 36, 24, -24, 152, 255, 37}  # killed, pytest error, timeouts, type check
MISSED = {0, 5, 33}  # survived, no tests


def equivalents(path: Path) -> dict[str, str]:
    """``{mutant name: reason}`` from the equivalents file (missing file: none)."""
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        name, _, reason = line.partition("#")
        if name.strip():
            if not reason.strip():
                raise SystemExit(f"{path}: '{name.strip()}' needs a reason after '#'")
            out[name.strip()] = reason.strip()
    return out


def module_scores(mutants: Path, equivalent: dict[str, str]) -> dict[str, dict[str, object]]:
    """Counts and score per mutated module."""
    scores: dict[str, dict[str, object]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(mutants)).removesuffix(".meta")
        counts: Counter[str] = Counter()
        survivors = []
        for name, code in codes.items():
            if name in equivalent:
                counts["equivalent"] += 1
            elif code is None:
                counts["not run"] += 1
            elif code in DETECTED:
                counts["detected"] += 1
            elif code in MISSED:
                counts["missed"] += 1
                survivors.append(name)
            else:
                counts["suspicious"] += 1
                survivors.append(name)
        judged = counts["detected"] + counts["missed"] + counts["suspicious"]
        scores[module] = {
            **counts,
            "score": counts["detected"] / judged if judged else None,
            "survivors": survivors,
        }
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument(
        "--equivalents", type=Path, default=Path(__file__).with_name("mutation_equivalents.txt")
    )
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args()
    if not args.mutants.is_dir():
        raise SystemExit(f"{args.mutants}: no mutmut results; run `make mutate` first")
    scores = module_scores(args.mutants, equivalents(args.equivalents))
    print(f"{'module':40s} {'detected':>8s} {'missed':>6s} {'equiv':>5s} {'not run':>7s} score")
    total = Counter()
    for module, s in scores.items():
        score = s["score"]
        text = "-" if score is None else f"{score:.1%}"
        missed = int(s.get("missed", 0)) + int(s.get("suspicious", 0))  # type: ignore[call-overload]
        print(
            f"{module:40s} {s.get('detected', 0):8d} {missed:6d}"
            f" {s.get('equivalent', 0):5d} {s.get('not run', 0):7d} {text}"
        )
        for key in ("detected", "missed", "suspicious", "equivalent", "not run"):
            total[key] += int(s.get(key, 0))  # type: ignore[call-overload]
    judged = total["detected"] + total["missed"] + total["suspicious"]
    overall = total["detected"] / judged if judged else None
    print(
        f"{'all':40s} {total['detected']:8d} {total['missed'] + total['suspicious']:6d} "
        f"{total['equivalent']:5d} {total['not run']:7d} "
        + ("-" if overall is None else f"{overall:.1%}")
    )
    (args.mutants / "score.json").write_text(
        json.dumps({"overall": overall, "modules": scores}, indent=2)
    )
    low = [m for m, s in scores.items() if s["score"] is not None and s["score"] < args.target]
    if low:
        print(f"below {args.target:.0%}: {', '.join(low)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
