"""A study's progress as its stages run: lines printed whole from threads (:func:`say`),
each stage numbered ``[k/N]`` with the time left (:class:`Progress`, :func:`eta_seconds`)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping, Sequence

_SAY_LOCK = threading.Lock()


def say(message: str) -> None:
    """Print one whole line, also when stages run side by side in threads."""
    with _SAY_LOCK:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 20 s`` or ``2 h 05 min`` (rounded to whole seconds / minutes)."""
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    m = round(s / 60)
    return f"{m // 60} h {m % 60:02d} min"


def eta_seconds(
    totals: Mapping[str, int],
    finished: Mapping[str, int],
    seconds: Mapping[str, Sequence[float]],
    jobs: int,
) -> tuple[float, dict[str, int]]:
    """Estimated time until every stage is finished, from the durations of finished ones.

    For each kind of stage: the mean duration of the stages of that kind that ran to
    completion in this pipeline run (skipped stages took no time and do not count),
    times the stages of that kind not finished yet (running ones count whole), divided
    by the jobs that can run them side by side (``min(jobs, left)``); the kinds' times
    are added (the study runs its kinds one phase after another). A kind with stages
    left but none timed yet has no estimate: it is returned apart, as its count of
    stages left, and not in the seconds.

    Args:
        totals: stages of the pipeline run per kind (skipped ones included).
        finished: stages finished (run or skipped) so far per kind.
        seconds: durations of the stages run to completion so far, per kind.
        jobs: stages run side by side (``pipeline.jobs``).

    Returns:
        ``(seconds, untimed)``: the estimate, and ``{kind: stages left}`` of the kinds
        without one.
    """
    eta = 0.0
    untimed: dict[str, int] = {}
    for kind, total in totals.items():
        left = total - finished.get(kind, 0)
        if left <= 0:
            continue
        done = seconds.get(kind) or []
        if not done:
            untimed[kind] = left
            continue
        eta += sum(done) / len(done) * left / min(max(1, jobs), left)
    return eta, untimed


class Progress:
    """Numbers a pipeline run's stages ``[k/N]`` and estimates the time left; thread-safe.

    ``N`` is every stage of the run (skipped ones included). A ``run`` or ``skip`` line
    shows ``k`` = stages started so far (a skipped stage counts as started and
    finished), a ``done`` line ``k`` = stages finished so far, followed by the ETA of
    :func:`eta_seconds`.

    Args:
        totals: stages of the pipeline run per kind.
        jobs: stages run side by side.
    """

    def __init__(self, totals: Mapping[str, int], jobs: int = 1) -> None:
        self.totals = dict(totals)
        self.total = sum(self.totals.values())
        self.jobs = max(1, int(jobs))
        self.started = 0
        self.finished: dict[str, int] = {}
        self.seconds: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def tag(self, k: int) -> str:
        """``[k/N]``."""
        return f"[{k}/{self.total}]"

    def start(self) -> str:
        """Count a stage that starts running; its tag."""
        with self._lock:
            self.started += 1
            return self.tag(self.started)

    def skip(self, kind: str) -> str:
        """Count a stage skipped as done (started and finished at once); its tag."""
        with self._lock:
            self.started += 1
            self.finished[kind] = self.finished.get(kind, 0) + 1
            return self.tag(self.started)

    def finish(self, kind: str, seconds: float) -> str:
        """Count a stage that ran for ``seconds``; its tag and the ETA, e.g.
        ``[3/8]; ETA 2 min 30 s (5 stages left)``."""
        with self._lock:
            self.finished[kind] = self.finished.get(kind, 0) + 1
            self.seconds.setdefault(kind, []).append(float(seconds))
            eta, untimed = eta_seconds(self.totals, self.finished, self.seconds, self.jobs)
            done = sum(self.finished.values())
        left = self.total - done
        # stages of a kind not timed yet add an unknown time: the ETA is a lower bound
        if not untimed:
            estimate = format_duration(eta)
        else:
            estimate = f"over {format_duration(eta)}" if eta > 0 else "not known yet"
        line = f"{self.tag(done)}; ETA {estimate} ({left} stage{'s' * (left != 1)} left"
        if untimed:
            line += "; not timed yet: " + ", ".join(f"{n} {k}" for k, n in untimed.items())
        return line + ")"
