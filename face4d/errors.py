"""The one exception type for bad user input; the CLI prints it as a single line."""


class Face4DError(ValueError):
    """Input that the package cannot work with: an unknown label, a bad file, a bad option value."""
