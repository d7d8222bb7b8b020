"""User-facing errors.

Anything a user can get wrong (a missing data set, a wrong array shape, an unknown preset, a corrupt
checkpoint) raises :class:`SelfVAEError` with a message that names the input and what is wrong. The CLI
prints that message as one line and exits with status 2 instead of showing a traceback.
"""


class SelfVAEError(Exception):
    """An error caused by user input; its message is shown to the user as is."""


class NoSplitError(SelfVAEError):
    """The data set has no such split (an image folder without ``test/``, an npz without ``x_test``)."""
