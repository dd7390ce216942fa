"""The one exception type the command-line boundary turns into a one-line message (see cli.py)."""


class PipelineError(Exception):
    """A problem the user can fix (bad input, bad parameter, missing file); printed without a traceback."""
