"""Why a video index cannot be used. Each message names the directory and says what to do about it."""

from hcmi.errors import HcmiError


class VideoIndexError(HcmiError):
    """A video index that cannot be opened, written or searched as asked."""


class IndexMissing(VideoIndexError):
    """No index at the given directory."""


class IndexCorrupt(VideoIndexError):
    """The directory holds an index whose files do not agree with its metadata."""


class IndexMismatch(VideoIndexError):
    """The index was built by another model (its fingerprint differs): its vectors mean something else."""
