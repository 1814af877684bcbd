"""What the terminal shows while a sweep runs: one line per trial event, the live frontier, and the
outcome of every trial (Ray callbacks)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ray.tune import Callback

from . import records
from .frontier import (
    frontier_table,
    hypervolume_curve,
)
from .records import (
    INFEASIBLE,
    LOST,
    STOPPED,
    TRAINING,
    Tag,
)
from .results import noise_of, update_architecture
from .space import Space
from .tracking import SweepTracker

__all__ = [
    "Progress",
    "TrialOutcomes",
    "TrialRecord",
]


# -------------------------------------------------------------------------------------- progress
class Progress(Callback):
    """The sweep in the terminal, instead of Ray's tables.

    A line per trial event (started, finished, failed) with the counts, the frontier's size and
    hypervolume so far; and each running trial's progress after every epoch (its choices, epoch e/E,
    that epoch's mAP, and an estimate of the sweep's time left): rewritten in place when ``live`` (a
    terminal), else a plain line per epoch.
    """

    def __init__(
        self,
        say: Callable[[str], None],
        objectives,
        total: int,
        *,
        epochs: int = 1,
        concurrent: int = 1,
        live: bool = False,
        stream=None,
    ) -> None:
        self.say, self.objectives, self.total = say, list(objectives), total
        self.epochs, self.concurrent, self.live = epochs, max(1, concurrent), live
        self.stream = stream  # None: sys.stdout when writing (Ray pickles callbacks with the Tuner)
        self.last: dict[str, tuple[float, int]] = {}  # trial id -> (time of its last result, epoch)
        self.epoch_s: list[float] = []
        self.rows: dict[tuple, dict] = {}  # finished seeds' final results, by (architecture, seed)
        self.in_place = False

    def _emit(self, line: str, *, transient: bool = False) -> None:
        if self.live:
            stream = self.stream or sys.stdout
            stream.write("\r\x1b[K" + (line if transient else ""))
            stream.flush()
            self.in_place = transient
            if transient:
                return
        self.say(line)

    def _frontier(self) -> str:
        rows = records.architecture_rows(
            [{**r, "arch_hash": arch, "seed": seed} for (arch, seed), r in self.rows.items()]
        )
        if not rows:
            return ""
        front = frontier_table(rows, self.objectives, noise_of(rows, self.objectives))  # as the final table
        try:
            hv = f", hypervolume {100 * hypervolume_curve(rows, self.objectives)[1][-1]:.3g} % of the box"
        except ValueError:
            hv = ""
        return f" | frontier {len(front)} of {len(rows)} architectures{hv}"

    def _counts(self, trials, trial=None, now: str = "") -> tuple[int, int, int]:
        # Ray calls back before it updates the trial's own status: count it as it is about to be.
        status = {t.trial_id: t.status for t in trials}
        if trial is not None:
            status[trial.trial_id] = now
        done = sum(s in ("TERMINATED", "ERROR") for s in status.values())
        running = sum(s == "RUNNING" for s in status.values())
        return done, running, max(0, self.total - done - running)

    def _left(self, running: int, pending: int) -> str:
        """The time left: the mean epoch so far, times the epochs left, over the trials running at once."""
        if not self.epoch_s:
            return ""
        epochs_left = sum(self.epochs - e for _, e in self.last.values()) + pending * self.epochs
        seconds = (
            statistics.mean(self.epoch_s) * epochs_left / min(self.concurrent, max(1, running + pending))
        )
        return f" | about {seconds / 60:.0f} min left" if seconds >= 90 else f" | about {seconds:.0f} s left"

    def _line(self, trials, event: str, trial=None, *, now: str = "") -> None:
        done, running, pending = self._counts(trials, trial, now)
        self._emit(
            f"[sweep] {event} | {done} done, {running} running, {pending} pending{self._frontier()}"
            f"{self._left(running, pending)}"  # where the runs are: said at the start and at the end
        )

    @staticmethod
    def _choices(trial) -> str:
        config = dict(trial.config or {})
        seed = config.pop("seed", None)
        config.pop("seeds", None)
        return records.choices_text(config) + (f" seed {seed}" if seed is not None else "")

    def on_trial_start(self, iteration, trials, trial, **info):
        self.last.setdefault(trial.trial_id, (time.monotonic(), 0))
        self._line(trials, f"started {trial.trial_id} {self._choices(trial)}", trial, now="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("final") or "epoch" not in result:
            return
        now, epoch = time.monotonic(), int(result["epoch"])
        since, before = self.last.get(trial.trial_id, (now, epoch - 1))
        if epoch > before:
            self.epoch_s.append((now - since) / (epoch - before))
        self.last[trial.trial_id] = (now, epoch)
        _, running, pending = self._counts(trials)
        main = self.objectives[0].metric
        value = result.get(main, float("nan"))
        self._emit(
            f"[sweep] {trial.trial_id} {self._choices(trial)}: epoch {epoch}/{self.epochs}, "
            f"{main} {value:.4g}{self._left(running, pending)}",
            transient=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.last.pop(trial.trial_id, None)
        result = trial.last_result or {}
        if result.get("failed"):
            what = "over a cost limit" if result.get("outcome") == INFEASIBLE else "failed"
            self._line(
                trials, f"{what} {trial.trial_id}: {result.get('error', '')[:200]}", trial, now="TERMINATED"
            )
            return
        if result.get("final"):
            config = dict(trial.config or {})
            seed = config.pop("seed", 0)
            config.pop("seeds", None)
            base = bool(config) and all(
                v == "keep" for v in config.values()
            )  # the hypervolume's box needs it
            # a reused result counts once
            self.rows[(result.get("arch_hash") or trial.trial_id, seed)] = {
                **result,
                "label": "base" if base else "",
            }
        self._line(trials, f"finished {trial.trial_id}", trial, now="TERMINATED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.last.pop(trial.trial_id, None)
        self._line(trials, f"failed {trial.trial_id}", trial, now="ERROR")

    def on_experiment_end(self, trials, **info):
        if self.in_place:
            self._emit("")


class TrialRecord:
    """Looks a trial's child run up in MLflow, from the driver."""

    def __init__(self, tracking_uri: str, experiment: str, parent_id: str) -> None:
        self.tracking_uri, self.experiment, self.parent_id = tracking_uri, experiment, parent_id

    def run(self, trial_id: str):
        tracker = SweepTracker(self.tracking_uri, self.experiment)
        return tracker, next(
            (r for r in tracker.trials(self.parent_id) if r.data.tags.get(Tag.TRIAL_ID) == trial_id), None
        )

    def __call__(self, trial_id: str) -> str | None:
        """The error recorded for a trial, if any."""
        _, run = self.run(trial_id)
        return run.data.tags.get(Tag.ERROR) if run is not None else None


class TrialOutcomes(Callback):
    """Record the outcomes a trial cannot record itself: stopped early by the scheduler, or lost.

    A trial whose worker died (SIGKILL, out of memory, node lost) after Ray's last retry never ends its
    run: mark it FAILED with status ``lost``, so a trial waiting for that architecture takes it over.
    """

    def __init__(self, record: TrialRecord, space: Space) -> None:
        self.record, self.space = record, space

    def _architecture(self, tracker: SweepTracker, run, trial) -> None:
        arch_run = run.data.tags.get(Tag.PARENT)
        if arch_run and arch_run != self.record.parent_id:
            update_architecture(
                tracker, arch_run, self.space, seeds=int((trial.config or {}).get("seeds", 1))
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (trial.last_result or {}).get("final") or (trial.last_result or {}).get("failed"):
            return  # finished, or ended on its own error: recorded by the trial itself
        tracker, run = self.record.run(trial.trial_id)
        if run is not None and run.data.tags.get(Tag.STATUS) == TRAINING:
            tracker.set_tags(run.info.run_id, {Tag.STATUS: STOPPED, Tag.STOPPED_EARLY: "true"})
            tracker.finish(run.info.run_id, "FINISHED")
            self._architecture(tracker, run, trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        tracker, run = self.record.run(trial.trial_id)
        if run is None or run.data.tags.get(Tag.STATUS) not in (None, TRAINING):
            return  # the trial recorded its own outcome (a failure it caught, infeasible, ...)
        tracker.set_tags(run.info.run_id, {Tag.STATUS: LOST})
        tracker.finish(
            run.info.run_id,
            "FAILED",
            error=f"the trial's worker died before the trial recorded an outcome (killed, out of memory or "
            f"its node lost), after {trial.num_failures} tries: {_last_line(trial.error_file)}",
        )
        self._architecture(tracker, run, trial)


def _last_line(error_file: str | None) -> str:
    """The last line of Ray's error file for a trial (the exception), or a placeholder."""
    try:
        lines = [ln for ln in Path(error_file).read_text().splitlines() if ln.strip()] if error_file else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else "no error text"
