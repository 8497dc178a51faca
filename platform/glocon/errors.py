"""Exception types. Every error names the file, key or field and what was expected."""


class GloconError(Exception):
    """Base class for errors glocon raises on bad input."""


class ConfigError(GloconError, ValueError):
    """A config file or override is missing, unknown, or of the wrong type."""


class DataError(GloconError, ValueError):
    """An input file or sample does not fit what glocon expects."""


class CheckpointError(GloconError, ValueError):
    """A checkpoint or export cannot be loaded safely."""


class PreflightError(ConfigError):
    """A job that cannot succeed, found by its driver before Ray starts (``glocon.preflight``; also
    raised by ``glocon.data.shards``, which is why it lives here, below both)."""
