"""What requests may read: files and folders under the media root, and live sources of the allowed kinds."""
from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..stream import NETWORK_PREFIXES
from .errors import ApiError

DEVICE = re.compile(r"/dev/video\d+")


class MediaPolicy:
    """Which local paths and live sources requests may name.

    A local path must be absolute; it is resolved (symlinks followed, ``..`` removed) and only then
    required to lie under the media root, and so is every entry of a folder. Without a media root
    no local path is read. Live sources other than local files: the ``allow`` kinds only (of
    :data:`~mmg_runtime.stream.SOURCE_KINDS`).
    """

    def __init__(self, media_root: Path | None, allow: frozenset[str] = frozenset()) -> None:
        self.root = None if media_root is None else Path(os.path.realpath(media_root))
        self.allow = allow

    def video(self, url: str, param: str) -> Path:
        """The file or folder of a ``video_url``: ``file:///absolute/path`` under the media root."""
        parts = urlsplit(url)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise ApiError(400, f"{param}: expected a file:// URL of a video file or a folder of images on the "
                                "server; other URLs are not fetched", "invalid_video_url", param)
        return self.local(unquote(parts.path), param)

    def local(self, path: str, param: str) -> Path:
        """``path`` resolved and confined to the media root (403 outside it, 400 when missing)."""
        if self.root is None:
            raise ApiError(403, f"{param}: this server reads no local files (start it with --media-root DIR)",
                           "local_files_off", param)
        if "\0" in path or not os.path.isabs(path):
            raise ApiError(400, f"{param}: expected an absolute path", "invalid_path", param)
        resolved = self._confined(path, param)
        if not resolved.exists():
            raise ApiError(400, f"{param}: no such file or folder: {path}", "video_not_found", param)
        if resolved.is_dir():
            for entry in resolved.iterdir():
                self._confined(str(entry), param)
        return resolved

    def stream_source(self, source: str, param: str = "source") -> str:
        """What :class:`~mmg_runtime.stream.LiveStream` opens for ``source``: a file or folder under the
        media root (``file://`` URL or absolute path), or an allowed device, network URL or ``gst:`` pipeline."""
        if source.startswith("file://"):
            return str(self.video(source, param))
        kind = ("gst" if source.startswith("gst:") else "device" if DEVICE.fullmatch(source)
                else "url" if source.startswith(NETWORK_PREFIXES) else None)
        if kind is None:
            return str(self.local(source, param))
        if kind not in self.allow:
            raise ApiError(403, f"{param}: {kind} sources are off on this server (start it with --allow-sources "
                                f"{kind})", "source_not_allowed", param)
        return source

    def _confined(self, path: str, param: str) -> Path:
        resolved = Path(os.path.realpath(path))
        if not resolved.is_relative_to(self.root):
            raise ApiError(403, f"{param}: outside the server's media root", "outside_media_root", param)
        return resolved


def shown_source(source: str) -> str:
    """``source`` as clients see it: a URL's user and password left out."""
    parts = urlsplit(source)
    if parts.password is None and parts.username is None:
        return source
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
