"""User-facing errors. Messages name the file, the row or field, what was expected and what to do."""

from __future__ import annotations


class MMSSError(Exception):
    """Base class: the CLI prints these as one clean line instead of a traceback."""


class DataError(MMSSError, ValueError):
    """Bad input data (a file, a row or a field that is not what the format says)."""


class FeatureStoreError(MMSSError):
    """A feature store that is missing, corrupt, or does not match what is asked of it."""


class ModelNotAvailableError(MMSSError):
    """Pretrained weights that cannot be found offline."""


class CheckpointError(MMSSError):
    """A checkpoint that is missing, corrupt, or from another configuration."""


class TrainingError(MMSSError):
    """Training cannot continue (e.g. a NaN or infinite loss)."""


class RunInUseError(TrainingError):
    """A run folder locked by another process (``mmss_lib.training.run_folder.run_lock``)."""


class DiskFullError(MMSSError, OSError):
    """A file could not be written: no space left on its device (``mmss_lib.utils.atomic_path``)."""


class PipelineError(MMSSError):
    """A notebook stage failed or got bad parameters."""


class SweepError(TrainingError):
    """Some runs of a sweep failed while the others finished (``run_experiment``).

    ``failures``: ``{run name: "Type: message"}``; ``results``: the tidy table of the runs that
    finished (the same columns as ``run_experiment``'s return value); ``tracebacks``: ``{run
    name: traceback text}`` where known.
    """

    def __init__(self, message: str, failures: dict | None = None, results=None):
        super().__init__(message)
        self.failures = dict(failures or {})
        self.results = results
        self.tracebacks: dict = {}


class RunStopped(MMSSError):
    """Raised by an ``on_epoch`` callback of :func:`mmss_lib.training.trainer.fit` to stop a run after an epoch
    (a tuner pruning a trial): the run keeps ``last.pt`` and ``history.json`` and writes no
    ``metrics.json``, so it is not finished and could be resumed."""


class TuneError(MMSSError, ValueError):
    """A hyperparameter search (``mmss tune``) that cannot run as asked: an unknown system or
    parameter, an empty or inverted range, a budget of 0 trials, a study file of another study."""
