"""Exceptions for user mistakes: the CLI prints them as one line and exits with code 2."""


class NeuroevoError(Exception):
    """Invalid input from the user (config, file, size); the message names the value and the fix."""


class ConfigError(NeuroevoError):
    """Invalid configuration key, type or value."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a resumable run, with a message that names the command that continues it."""
