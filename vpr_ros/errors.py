"""
Exceptions with messages that say what went wrong and what to do about it.

Every error a user can cause derives from VprError, so the CLI and the node can
report it in one line without a traceback.
"""


class VprError(Exception):
    """Base class: the message names the problem and the fix."""


class ImageDecodeError(VprError):
    """
    An image could not be decoded or has an unsupported encoding or size.

    `reason` is a short fixed phrase ("truncated JPEG", "odd width for YUV 4:2:2", ...) for
    counting bad frames by kind; the message carries the details and the fix.
    """

    def __init__(self, message: str, reason: str = "bad image") -> None:
        super().__init__(message)
        self.reason = reason


class MapError(VprError):
    """A map directory is missing, incomplete, corrupt or from another model."""


class MapNotFoundError(MapError):
    """No map at the given path."""


class MapIntegrityError(MapError):
    """A map file is missing or its checksum does not match the manifest."""


class MapManifestError(MapIntegrityError):
    """manifest.json is unreadable, altered (checksum) or breaks the manifest schema."""


class MapModelMismatchError(MapError):
    """The map was built with another model or other weights than the running extractor."""


class LocalFeaturesMissingError(MapError):
    """The map holds no local features (``local/``) for the requested re-ranker."""


class BagError(VprError):
    """A rosbag cannot be read, is truncated, or lacks the requested topic."""


class PoseError(VprError):
    """The poses of a source give no usable position where one is required (e.g. for a map)."""


class WeightsError(VprError):
    """Model weights are missing or do not fit the model."""


class BackendUnavailableError(VprError):
    """The requested inference backend is not installed or has no device."""


class ConfigError(VprError):
    """A parameter or command-line option has an invalid value."""


class DatasetError(VprError):
    """Training data is missing, empty, mislabelled or too small for the sampler."""
