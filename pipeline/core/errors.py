"""Typed errors of the pipeline. Every message says what was expected, what was found, and what to try."""
from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(PipelineError):
    """A configuration value (variant, resolution, precision, path) is invalid."""


class CheckpointError(PipelineError):
    """A checkpoint file cannot be read or does not fit the requested network."""


class ExportError(PipelineError):
    """Torch to ONNX export failed or produced an unusable graph."""


class RewriteError(PipelineError):
    """A graph does not have the structure the IAM rewrite expects."""


class CalibrationError(PipelineError):
    """Calibration data or quantization failed."""


class BuildError(PipelineError):
    """An engine could not be built (missing TensorRT, plugin library, or a builder failure)."""


class ParityError(PipelineError):
    """Outputs of two backends differ by more than the stated tolerance."""


class PluginLibraryError(PipelineError):
    """The plugin or host-reference shared library is missing or unusable."""


class IntegrityError(PipelineError):
    """An engine folder is not what its manifest says: a file is missing, changed, or disagrees with its ONNX."""


class StorageError(PipelineError):
    """The operating system refused a file operation (disk full, permission denied, read-only file system)."""


class ImageError(PipelineError):
    """An image path is missing, a directory, unreadable, undecodable, or in a mode that cannot become RGB."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the decoding limit (``pipeline.data.images.max_image_pixels``)."""
