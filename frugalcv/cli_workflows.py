"""CLI commands for pipelines (run, status, resume, ...): added as the workflows land."""


def add_commands(sub) -> None:
    """Register the workflow subcommands on the ``frugalcv`` parser."""
