"""Exceptions that name the file, key or URL at fault."""


class FrugalError(Exception):
    """Base class for errors meant to be shown to a user without a traceback."""


class SourceLayoutError(FrugalError):
    """A dataset source folder is not in the expected on-disk layout."""


class ShardError(FrugalError):
    """A shard (or its manifest) is missing, truncated, corrupt or fails to decode."""


class ConfigError(FrugalError):
    """A configuration value or key is invalid."""
