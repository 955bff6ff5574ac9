"""The exceptions lstm-convert raises for anything a user can cause.

Every message is meant to be shown as-is on one to a few lines: it names the file, the layer where
there is one, and what the user can do. The CLI maps ``ConversionError`` to exit code 2 and
``VerificationFailed`` to exit code 1.
"""

from __future__ import annotations


class ConversionError(Exception):
    """Base class: the input cannot be converted as asked (exit code 2)."""


class BadModelFile(ConversionError):
    """The file is missing, unreadable, truncated, or not a Keras model file we understand."""


class UnsupportedLayer(ConversionError):
    """A layer class or a layer option that cannot be converted exactly."""


class BadInputs(ConversionError):
    """An ``--inputs`` file or array whose names, shapes or dtypes do not fit the model."""


class BadOptions(ConversionError):
    """Command options that conflict or that the target format cannot honour."""


class OutputExists(ConversionError):
    """The output file exists and ``--force`` was not given."""


class WriteFailed(ConversionError):
    """An output cannot be written: a read-only folder, a full disk, a file-size limit (nothing is left behind)."""


class VerificationFailed(Exception):
    """An export ran but its outputs differ from the original's by more than the tolerance (exit 1)."""
