"""Errors a learner can act on: each message says what went wrong and what to run or change."""


class CourseError(Exception):
    """Base class for mistakes the course can explain (bad input, missing artifact, wrong preset)."""


class MissingArtifactError(CourseError, FileNotFoundError):
    """An artifact that an earlier notebook writes is not there yet."""


class ModelUnavailableError(CourseError, OSError):
    """A model cannot be loaded here (package not installed, hub unreachable, gated id)."""


class DataFormatError(CourseError, ValueError):
    """A data file or argument is not in the expected shape (names the file, line and field)."""
