"""The error type raised for bad input data."""


class DataError(ValueError):
    """Input data that synthsat cannot use; the message names the file and the problem."""
