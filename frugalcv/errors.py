"""Exceptions that name the file, key or URL at fault."""


class FrugalError(Exception):
    """Base class for errors meant to be shown to a user without a traceback."""


class SourceLayoutError(FrugalError):
    """A dataset source folder is not in the expected on-disk layout."""


class ShardError(FrugalError):
    """A shard (or its manifest) is missing, truncated, corrupt or fails to decode."""


class ConfigError(FrugalError):
    """A configuration value or key is invalid."""


class ShardStreamLost(ShardError):
    """A shard's stream failed mid-read and could not be resumed; the tar reader adds the member."""

    def __init__(self, url: str, offset: int, reason: str):
        self.url, self.offset, self.reason = url, offset, reason
        super().__init__(self.at("the shard"))

    def at(self, where: str) -> str:
        """The message, naming what was being read (``member 'k.png'``)."""
        return f"{self.url}: reading {where} at byte {self.offset}: {self.reason}"
