"""The one exception the command line reports as a user error."""


class CliError(Exception):
    """Bad input or a refused request: ``main`` prints the message on one line and exits with 2."""
