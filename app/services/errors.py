"""Errors services raise; the web maps them to 4xx answers."""


class NotFoundError(Exception):
    """The thing does not exist, or belongs to someone else."""


class ConflictError(Exception):
    """Something with the same unique name exists already, or the state forbids it."""


class InvalidInputError(ValueError):
    """Input a person can fix; the message says how."""


class UnavailableError(Exception):
    """A service the request needs (the job queue) is not answering; retry later."""


class LimitExceededError(Exception):
    """The caller has too much of something expensive going at once; retry when some ends."""
