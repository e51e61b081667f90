"""Errors of the offline path (dataset building, finetuning, evaluation).

Like the engine's (``engine.errors``), each is named after the condition, carries the
offending value and tells the user what to do; the ``python -m training.*`` commands
print ``str(error)`` as one line and exit with status 2.
"""

from __future__ import annotations

from engine.errors import VeritasError


class TrainingError(VeritasError):
    """Base class: an error a user of ``training/`` can act on."""


class LayoutError(TrainingError):
    """The input folder is neither an FF++ tree nor a plain ``real/`` ``fake/`` folder."""

    def __init__(self, root: str, problem: str, hint: str) -> None:
        self.root = root
        super().__init__(f"{root}: {problem}; {hint}")


class NoVideosError(LayoutError):
    def __init__(self, root: str, where: str) -> None:
        super().__init__(
            root,
            f"no videos found ({where})",
            "give video files or folders of images; check --compression and --methods",
        )


class DatasetNotFoundError(TrainingError):
    def __init__(self, path: str, problem: str = "is not a dataset folder") -> None:
        self.path = path
        super().__init__(
            f"{path}: {problem}; build one with 'python -m training.build_dataset INPUT {path}'"
        )


class EmptyDatasetError(TrainingError):
    """A selection of samples that must not be empty is."""

    def __init__(self, what: str, hint: str) -> None:
        super().__init__(f"no {what}; {hint}")


class SettingsMismatchError(TrainingError):
    """Resuming a build into a folder made with other settings."""

    def __init__(self, path: str, key: str, old: object, new: object) -> None:
        self.path, self.key = path, key
        super().__init__(
            f"{path} was built with {key} = {old!r}, not {new!r}; resume with the same "
            "settings, or write to a new folder"
        )


class BadOptionError(TrainingError):
    """A command-line option value the command cannot use."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        self.option, self.value = option, value
        super().__init__(f"{option} {value!r} is invalid: expected {expected}")
