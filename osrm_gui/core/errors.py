"""The one exception type the CLI and the app turn into a one-line message."""


class OsrmError(Exception):
    """A problem with the user's input, stated in one line that names the file."""
