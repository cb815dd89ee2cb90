"""Errors raised on bad input; each message names the file, line or id and what was expected."""


class LmrecError(Exception):
    """Base class of lmrec's own errors (the CLI prints these without a traceback)."""


class DataFormatError(LmrecError, ValueError):
    """A data file does not follow its format: the message names the file, the line and what was expected."""

    def __init__(self, path: object, line: int | None, message: str):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class UnknownIdError(LmrecError, KeyError):
    """An external user or item id that the dataset does not know."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class EmptyUserError(LmrecError, ValueError):
    """A user with no training interactions where the model needs some."""


class EmbeddingError(LmrecError, ValueError):
    """Embeddings with the wrong shape or non-finite values."""
