"""MLflow tracking for sweeps: one parent run per sweep, one child run per trial, both found again on resume.

Runs are found by tags, never by an in-memory map, so a sweep restored with ``Tuner.restore`` (or a trial
restarted in another process) reattaches to its runs instead of opening duplicates. Everything goes through
an explicit :class:`mlflow.MlflowClient`; the fluent ``mlflow.start_run`` state is global to one process
and trials run in other processes, concurrently.

Tags written here:

* parent: ``sweep.name``, ``sweep.role = parent`` (plus the caller's tags and the git commit);
* child: ``sweep.name``, ``sweep.role = trial``, ``trial.id``, ``mlflow.parentRunId`` (nests it in the UI).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# Only `import mlflow`: ruff counts the repo's mlflow/ folder as first-party and would split the group.
import mlflow

from .records import ROLE_ARCH, ROLE_PARENT, ROLE_TRIAL, Tag

__all__ = [
    "DEFAULT_STORE_DIR",
    "SweepTracker",
    "TrackingError",
    "check_tracking",
    "default_tracking_uri",
    "download_artifact",
    "find_parent",
    "get_run",
    "open_store",
    "local_store_path",
    "git_commit",
    "sanitize_metric_name",
    "sanitize_metrics",
]

logger = logging.getLogger(__name__)

_REPO_DIR = Path(__file__).resolve().parents[1]
DEFAULT_STORE_DIR = _REPO_DIR / "mlflow"

# MLflow's own limits (mlflow.utils.validation); exceeding them is an error, so we truncate first.
_MAX_KEY_LEN = 250
_MAX_PARAM_VAL_LEN = 6000
_MAX_TAG_VAL_LEN = 8000
_MAX_ERROR_TAG_LEN = 5000
# Per log_batch call.
_MAX_PARAMS_TAGS_PER_BATCH = 100
_MAX_METRICS_PER_BATCH = 1000
_PAGE_SIZE = 1000

_TERMINAL = ("FINISHED", "FAILED", "KILLED")
_SWEEP_NAME = Tag.SWEEP
_SWEEP_ROLE = Tag.ROLE
_TRIAL_ID = Tag.TRIAL_ID
_PARENT_ID = Tag.PARENT
_RUN_NAME = Tag.RUN_NAME
_GIT_COMMIT = Tag.GIT_COMMIT

# MLflow also accepts ':' (except on Windows); we do not, so names stay portable across stores.
_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\- /]")


class TrackingError(RuntimeError):
    """The MLflow tracking store cannot be used (unreachable server, unusable folder, ...)."""


def default_tracking_uri() -> str:
    """The embedded SQLite store inside the repo's ``mlflow/`` folder."""
    return f"sqlite:///{DEFAULT_STORE_DIR / 'mlflow.db'}"


def git_commit() -> str | None:
    """The repo's ``HEAD`` commit hash, or None when it is not a git checkout (or git is missing)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO_DIR, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


# --------------------------------------------------------------------------- store checks


def local_store_path(uri: str) -> tuple[str, Path | None] | None:
    """Classify a local store URI as ``("sqlite", db_file)`` or ``("file", folder)``; None if not local.

    The db file is None for an in-memory SQLite database.
    """
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        # SQLAlchemy form: sqlite:///relative.db, sqlite:////absolute.db; sqlite:// is in memory.
        rest = uri[len("sqlite://") :].split("?", 1)[0]
        if rest in ("", "/", "/:memory:"):
            return "sqlite", None
        return "sqlite", Path(rest[1:])
    if scheme == "file":
        return "file", Path(urllib.request.url2pathname(urlparse(uri).path))
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a bare path (or a Windows drive)
        return "file", Path(uri)
    return None


def _check_folder(uri: str, folder: Path) -> None:
    if not folder.is_absolute():
        # Ray Tune changes each trial's working directory, so a relative store splits in two.
        logger.warning("tracking URI %s is relative to the working directory; prefer an absolute path", uri)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrackingError(f"MLflow tracking store {uri}: cannot create folder {folder}: {exc}") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow tracking store {uri}: folder {folder} is not writable")


@contextmanager
def _fail_fast_http(timeout_s: float) -> Iterator[None]:
    """Make MLflow's HTTP client give up at once instead of retrying with backoff for minutes."""
    new = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_s))),
    }
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _client_probe(uri: str, timeout_s: float) -> None:
    """One cheap client call, with retries off; raises TrackingError when it fails."""
    try:
        with _fail_fast_http(timeout_s):
            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # any failure here means the store is unusable; say why
        raise TrackingError(f"MLflow tracking server at {uri} is unreachable: {exc}") from exc


def check_tracking(uri: str, timeout_s: float = 10) -> None:
    """Fail fast, with one clear message, when the tracking store cannot be used.

    http(s): the server must answer ``GET <uri>/health`` within ``timeout_s`` (when it answers with an
    HTTP error, e.g. behind an authenticating proxy, one client call with retries off decides).
    sqlite and file stores: the folder must exist or be creatable, and be writable. Other schemes
    (e.g. ``postgresql://``) get one client call, bounded by the database driver's own timeouts.

    Args:
        uri: The MLflow tracking URI.
        timeout_s: Seconds to wait for a server.

    Raises:
        TrackingError: The store is unreachable or unusable.
    """
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        start = time.monotonic()
        try:
            # urllib directly: MLflow's client would retry with exponential backoff for minutes.
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                resp.read(64)
            return
        except urllib.error.HTTPError as exc:
            logger.debug("GET %s answered HTTP %s; trying the MLflow client", url, exc.code)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"MLflow tracking server at {uri} is unreachable: {reason}") from exc
        _client_probe(uri, max(1.0, timeout_s - (time.monotonic() - start)))
        return
    local = local_store_path(uri)
    if local is None:
        _client_probe(uri, timeout_s)
        return
    kind, path = local
    if path is None:  # in-memory SQLite: nothing on disk to check
        return
    _check_folder(uri, path.parent if kind == "sqlite" else path)
    if kind == "sqlite" and path.exists() and not (path.is_file() and os.access(path, os.R_OK | os.W_OK)):
        raise TrackingError(f"MLflow tracking store {uri}: {path} is not a readable and writable file")


def find_parent(uri: str, experiment: str, sweep_name: str) -> mlflow.entities.Run | None:
    """The parent run of the sweep ``sweep_name``, looked up without writing anything; None if none.

    A sqlite store that does not exist yet is not created.
    """
    local = local_store_path(uri)
    if local is not None and local[0] == "sqlite" and local[1] is not None and not local[1].exists():
        return None
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = client.search_runs(
        [exp.experiment_id],
        f"tags.`{_SWEEP_NAME}` = {_quote(sweep_name)} AND tags.`{_SWEEP_ROLE}` = {_quote(ROLE_PARENT)}",
        run_view_type=mlflow.entities.ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return found[0] if found else None


def open_store(uri: str) -> mlflow.MlflowClient:
    """A client on an existing store, for reading a finished sweep; TrackingError instead of creating an
    empty one (a local store that is not there) or waiting on a server that does not answer."""
    local = local_store_path(uri)
    if local is not None:
        if local[1] is None or not local[1].exists():  # MLflow would silently create an empty store
            raise TrackingError(f"no MLflow tracking store at {uri}")
    else:
        check_tracking(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def get_run(client: mlflow.MlflowClient, run_id: str) -> mlflow.entities.Run | None:
    """The run ``run_id``; None when the store has none."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def download_artifact(client: mlflow.MlflowClient, run_id: str, name: str, *, dst: Path) -> Path | None:
    """The run's artifact ``name`` downloaded into ``dst``; None when the run has none."""
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, name, str(dst)))
    except (MlflowException, OSError):
        return None


# --------------------------------------------------------------------------- names and values


def sanitize_metric_name(name: str) -> str:
    """Turn a metric (or param/tag) key into one MLflow accepts.

    ``metrics/mAP50-95(B)`` becomes ``metrics/mAP50-95_B``: characters other than alphanumerics,
    ``_ . - /`` and space become ``_``, trailing ``_`` are stripped, and path-like oddities MLflow
    rejects (empty or ``.``/``..`` segments, a leading or trailing ``/``) are removed.

    Raises:
        ValueError: Nothing usable is left of ``name``.
    """
    cleaned = _BAD_CHARS.sub("_", str(name))
    parts = []
    for part in cleaned.split("/"):
        part = part.rstrip("_")
        if part in ("", "."):
            continue
        parts.append("__" if part == ".." else part)
    out = "/".join(parts)[:_MAX_KEY_LEN].rstrip("/")
    if not out:
        raise ValueError(f"metric name {name!r} has no characters MLflow accepts")
    return out


def _as_float(value: Any) -> float | None:
    """A finite float from a real number (numpy and 0-d torch scalars included), else None."""
    if isinstance(value, bool):  # a bool is an int to Python, but not a metric
        return None
    if not isinstance(value, numbers.Real) and hasattr(value, "item"):
        try:
            value = value.item()
        except (TypeError, ValueError, RuntimeError):  # arrays of size != 1
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def sanitize_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Sanitized names and finite float values; non-numeric and non-finite entries are dropped.

    Drops are logged at debug level (NaN losses are common early in training; not worth a warning).
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        number = _as_float(value)
        if number is None:
            logger.debug("dropping metric %r: %r is not a finite number", key, value)
            continue
        try:
            name = sanitize_metric_name(key)
        except ValueError:
            logger.warning("dropping metric %r: no usable name", key)
            continue
        if name in out:
            logger.warning("metric %r collides with another metric as %r; keeping the last", key, name)
        out[name] = number
    return out


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{full}."))
        else:
            out[full] = value
    return out


def _clean_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Flattened (``a.b``), stringified and truncated to MLflow's limits."""
    out: dict[str, str] = {}
    for key, value in _flatten(params).items():
        text = str(value)
        if len(text) > _MAX_PARAM_VAL_LEN:
            logger.debug("param %r truncated to %d characters", key, _MAX_PARAM_VAL_LEN)
            text = text[:_MAX_PARAM_VAL_LEN]
        out[sanitize_metric_name(key)] = text
    return out


def _clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {sanitize_metric_name(k): str(v)[:_MAX_TAG_VAL_LEN] for k, v in tags.items() if v is not None}


def _quote(value: str) -> str:
    """A string literal for an MLflow search filter (its parser has no escapes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search for {value!r}: it contains both quote characters")


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# --------------------------------------------------------------------------- the tracker


class SweepTracker:
    """Parent and child runs of a sweep in one MLflow experiment, keyed by tags so a resume reattaches.

    Args:
        tracking_uri: The MLflow tracking URI (see :func:`default_tracking_uri`).
        experiment: Experiment name; created when missing. For a SQLite store its artifacts go to the
            ``artifacts/`` folder next to the database file.

    Raises:
        TrackingError: The experiment exists but is deleted.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._experiment_id(experiment)

    def _experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            local = local_store_path(self.tracking_uri)
            location = None
            if local is not None and local[0] == "sqlite" and local[1] is not None:
                location = (local[1].resolve().parent / "artifacts").as_uri()
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except mlflow.exceptions.MlflowException:
                # Another trial process may have created it a moment ago.
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage != "active":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore), "
                "delete it for good (mlflow gc), or use another experiment name"
            )
        return exp.experiment_id

    # ----------------------------------------------------------------- search

    def _search(self, experiment_id: str, filter_string: str) -> list[mlflow.entities.Run]:
        """All active runs matching the filter, oldest first, across every page."""
        runs: list[mlflow.entities.Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [experiment_id],
                filter_string,
                run_view_type=mlflow.entities.ViewType.ACTIVE_ONLY,
                max_results=_PAGE_SIZE,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def children(self, parent_id: str) -> list[mlflow.entities.Run]:
        """Every child run of ``parent_id``, whatever its status, oldest first."""
        experiment_id = self.client.get_run(parent_id).info.experiment_id
        return self._search(experiment_id, f"tags.`{_PARENT_ID}` = {_quote(parent_id)}")

    def _sweep_runs(self, parent_id: str, role: str) -> list[mlflow.entities.Run]:
        parent = self.client.get_run(parent_id)
        name = parent.data.tags.get(_SWEEP_NAME, "")
        return self._search(
            parent.info.experiment_id,
            f"tags.`{_SWEEP_NAME}` = {_quote(name)} AND tags.`{_SWEEP_ROLE}` = {_quote(role)}",
        )

    def trials(self, parent_id: str) -> list[mlflow.entities.Run]:
        """Every trial run of the sweep ``parent_id`` (one per Ray trial: a seed of an architecture)."""
        return self._sweep_runs(parent_id, ROLE_TRIAL)

    def architectures(self, parent_id: str) -> list[mlflow.entities.Run]:
        """Every architecture run of the sweep ``parent_id`` (its seeds' trial runs sit beneath)."""
        return self._sweep_runs(parent_id, ROLE_ARCH)

    def create_child(
        self, parent_id: str, role: str, params: Mapping[str, Any], *, tags: Mapping[str, Any]
    ) -> str:
        """A new run nested under ``parent_id`` with the sweep's name and ``role``; its run id."""
        parent_run = self.client.get_run(parent_id)
        clean_tags = _clean_tags(tags)
        clean_tags.update(
            {_PARENT_ID: parent_id, _SWEEP_ROLE: role, _SWEEP_NAME: parent_run.data.tags.get(_SWEEP_NAME, "")}
        )
        run_name = clean_tags.setdefault(_RUN_NAME, role)
        run = self.client.create_run(parent_run.info.experiment_id, tags=clean_tags, run_name=run_name)
        self._log_batch(run.info.run_id, params=_clean_params(params))
        return run.info.run_id

    def delete(self, run_id: str) -> None:
        """End a run as KILLED and delete it (it leaves the UI and every search; the store keeps it, deleted,
        until ``mlflow gc``, and no deleted run is left RUNNING there)."""
        self.client.set_terminated(run_id, "KILLED")
        self.client.delete_run(run_id)

    def runs_for_sweep(self, sweep_name: str) -> list[mlflow.entities.Run]:
        """The parent and all trial runs of a sweep in this experiment, oldest first."""
        return self._search(self.experiment_id, f"tags.`{_SWEEP_NAME}` = {_quote(sweep_name)}")

    # ----------------------------------------------------------------- runs

    def _reattach(
        self, run: mlflow.entities.Run, params: dict[str, str], tags: dict[str, str], *, reopen: bool
    ) -> None:
        """Update tags, log params the run lacks (never change one), and reopen a terminated run."""
        run_id = run.info.run_id
        old = run.data.params
        changed = sorted(k for k, v in params.items() if k in old and old[k] != v)
        if changed:
            logger.warning("run %s keeps its logged values of changed params %s", run_id, changed)
        self._log_batch(run_id, params={k: v for k, v in params.items() if k not in old}, tags=tags)
        if reopen and run.info.status != "RUNNING":
            logger.info("reopening run %s (was %s)", run_id, run.info.status)
            self.client.update_run(run_id, status="RUNNING")

    def _log_batch(
        self, run_id: str, params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
    ) -> None:
        param_list = [mlflow.entities.Param(k, v) for k, v in (params or {}).items()]
        tag_list = [mlflow.entities.RunTag(k, v) for k, v in (tags or {}).items()]
        for chunk in _chunks(param_list, _MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=chunk)
        for chunk in _chunks(tag_list, _MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=chunk)

    def parent(self, sweep_name: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        """The run id of the sweep's parent run, created the first time and reattached (RUNNING) after.

        Params are logged once: on reattach only missing ones are added, since MLflow rejects a changed
        value (a changed one is kept as first logged, with a warning).

        Args:
            sweep_name: The sweep's name; one parent run per name in this experiment, ever.
            params: Sweep configuration; nested mappings are flattened to ``a.b`` keys.
            tags: Extra tags; the git commit is added when known.
        """
        clean_params = _clean_params(params)
        commit = git_commit()
        clean_tags = _clean_tags({**({_GIT_COMMIT: commit} if commit else {}), **tags})
        clean_tags.update({_SWEEP_NAME: sweep_name, _SWEEP_ROLE: ROLE_PARENT})
        found = self._search(
            self.experiment_id,
            f"tags.`{_SWEEP_NAME}` = {_quote(sweep_name)} AND tags.`{_SWEEP_ROLE}` = {_quote(ROLE_PARENT)}",
        )
        if found:
            if len(found) > 1:
                logger.warning("sweep %r has %d parent runs; using the oldest", sweep_name, len(found))
            self._reattach(found[0], clean_params, clean_tags, reopen=True)
            return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id, tags=clean_tags, run_name=clean_tags.get(_RUN_NAME, sweep_name)
        )
        self._log_batch(run.info.run_id, params=clean_params)
        logger.info("sweep %r: parent run %s", sweep_name, run.info.run_id)
        return run.info.run_id

    def child(
        self,
        parent_id: str,
        trial_id: str,
        params: Mapping[str, Any],
        *,
        tags: Mapping[str, Any],
        reopen: bool = True,
    ) -> str:
        """The run id of a trial's child run: one per trial id ever, found again on resume.

        The run is created with its identifying tags in one call, so a later search finds it. Two
        processes asking for the same new trial id at the same instant could still both create one;
        Ray runs a trial in one process at a time, so this is not guarded beyond the search.

        Args:
            parent_id: The sweep's parent run id.
            trial_id: The Ray Tune trial id.
            params: The trial's parameters; logged once (see :meth:`parent`).
            tags: Extra tags; ``mlflow.runName`` among them names the run (default: the trial id).
            reopen: Set a terminated run back to RUNNING (a restarted trial). Pass False to only look
                the run up.
        """
        parent_run = self.client.get_run(parent_id)
        clean_params = _clean_params(params)
        clean_tags = _clean_tags(tags)
        clean_tags.update(
            {
                _PARENT_ID: parent_id,
                _TRIAL_ID: trial_id,
                _SWEEP_ROLE: ROLE_TRIAL,
                _SWEEP_NAME: parent_run.data.tags.get(_SWEEP_NAME, ""),
            }
        )
        experiment_id = parent_run.info.experiment_id
        found = self._search(
            experiment_id,
            f"tags.`{_PARENT_ID}` = {_quote(parent_id)} AND tags.`{_TRIAL_ID}` = {_quote(trial_id)}",
        )
        if found:
            if len(found) > 1:
                logger.warning("trial %s has %d runs; using the oldest", trial_id, len(found))
            # Keep the run's first name: renaming on every resume would make the UI jump around.
            clean_tags.pop(_RUN_NAME, None)
            self._reattach(found[0], clean_params, clean_tags, reopen=reopen)
            return found[0].info.run_id
        run_name = clean_tags.setdefault(_RUN_NAME, trial_id)
        run = self.client.create_run(experiment_id, tags=clean_tags, run_name=run_name)
        self._log_batch(run.info.run_id, params=clean_params)
        return run.info.run_id

    def run(self, run_id: str) -> mlflow.entities.Run:
        """The run as stored now (tags, params, metrics, status)."""
        return self.client.get_run(run_id)

    def reopen(self, run_id: str) -> None:
        """Set a terminated run back to RUNNING (a trial that restarts)."""
        self.client.update_run(run_id, status="RUNNING")

    def metric_steps(self, run_id: str, key: str) -> set[int]:
        """The steps at which ``key`` was logged on the run."""
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    # ----------------------------------------------------------------- logging

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics under sanitized names; non-numeric and non-finite values are dropped."""
        clean = sanitize_metrics(metrics)
        timestamp = int(time.time() * 1000)
        entities = [mlflow.entities.Metric(k, v, timestamp, step or 0) for k, v in clean.items()]
        for chunk in _chunks(entities, _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=chunk)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set (or overwrite) tags; values are stringified and truncated, None values skipped."""
        self._log_batch(run_id, tags=_clean_tags(tags))

    def log_artifact(
        self, run_id: str, path: str | os.PathLike[str], artifact_path: str | None = None
    ) -> None:
        """Copy a local file or folder into the run's artifacts."""
        self.client.log_artifact(run_id, os.fspath(path), artifact_path)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Write text as an artifact file (e.g. ``model.yaml``)."""
        self.client.log_text(run_id, text, artifact_file)

    def log_dict(self, run_id: str, dictionary: dict[str, Any], artifact_file: str) -> None:
        """Write a dict as a JSON or YAML artifact, chosen by the file's extension."""
        self.client.log_dict(run_id, dictionary, artifact_file)

    def finish(self, run_id: str, status: str = "FINISHED", error: str | None = None) -> None:
        """End a run.

        Args:
            run_id: The run.
            status: FINISHED, FAILED or KILLED. With an ``error``, FINISHED becomes FAILED.
            error: An error text (e.g. a traceback): tagged ``error`` (truncated) and kept in full as
                the ``error.txt`` artifact.

        Raises:
            ValueError: ``status`` is not a terminal status.
        """
        status = status.upper()
        if status not in _TERMINAL:
            raise ValueError(f"`status` must be one of {_TERMINAL}, got {status!r}")
        if error is not None:
            if status == "FINISHED":
                status = "FAILED"
            self.client.set_tag(run_id, "error", error[:_MAX_ERROR_TAG_LEN])
            try:
                self.client.log_text(run_id, error, "error.txt")
            except Exception:  # the run must still be ended when the artifact store is the problem
                logger.warning("could not store error.txt for run %s", run_id, exc_info=True)
        self.client.set_terminated(run_id, status=status)

    def close_dangling(self, parent_id: str) -> list[str]:
        """Mark every run of the sweep (but its parent) still RUNNING as KILLED (end of a sweep); returns their ids."""
        name = self.client.get_run(parent_id).data.tags.get(_SWEEP_NAME, "")
        runs = {r.info.run_id: r for r in [*self.children(parent_id), *self.runs_for_sweep(name)]}
        killed = [
            run_id
            for run_id, r in runs.items()
            if r.info.status == "RUNNING" and r.data.tags.get(_SWEEP_ROLE) != ROLE_PARENT
        ]
        for run_id in killed:
            self.client.set_terminated(run_id, status="KILLED")
        if killed:
            logger.info("killed %d dangling trial runs of %s", len(killed), parent_id)
        return killed
