"""Custom logo: turn JUPYTERHUB_LOGO_URI (http(s), file:// or data:) into the file JupyterHub serves."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import urllib.parse
import urllib.request
from pathlib import Path

MAX_BYTES = 2 * 1024 * 1024
EXTENSIONS = {
    "image/png": ".png",
    "image/svg+xml": ".svg",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}


class LogoError(ValueError):
    """The logo cannot be used; the message is one line naming the URI's problem."""


LOGO_DIR = Path("/srv/jupyterhub/logo")  # the one folder a file:// logo may come from (mount it via the override)


def materialize(uri: str, workdir: Path, timeout: float = 10.0, logo_dir: Path = LOGO_DIR) -> Path:
    """Return a local file with the logo's bytes. http(s) and data: are written into `workdir`.

    A file:// logo must lie in `logo_dir`: /hub/logo serves it without login, so a path anywhere else
    could publish any file the hub can read, such as its cookie secret.
    """
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path)).resolve()
        if not path.is_relative_to(logo_dir.resolve()):
            raise LogoError(
                f"JUPYTERHUB_LOGO_URI={uri!r}: a file:// logo must be in {logo_dir}/ (mount it there via the override)"
            )
        if not path.is_file():
            raise LogoError(
                f"JUPYTERHUB_LOGO_URI={uri!r}: no such file inside the hub container (mount it via the override)"
            )
        return _write(workdir, mimetypes.guess_type(path.name)[0] or "", path.read_bytes()[: MAX_BYTES + 1], uri)
    if parsed.scheme == "data":
        header, _, payload = uri[5:].partition(",")
        media = header.split(";")[0] or "text/plain"
        try:
            data = (
                base64.b64decode(payload, validate=True)
                if header.endswith(";base64")
                else urllib.parse.unquote_to_bytes(payload)
            )
        except (binascii.Error, ValueError) as exc:
            raise LogoError(f"JUPYTERHUB_LOGO_URI: the data: URI is not valid base64 ({exc})") from exc
        return _write(workdir, media, data, uri)
    if parsed.scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri, timeout=timeout) as response:
                data = response.read(MAX_BYTES + 1)
                media = response.headers.get_content_type()
        except OSError as exc:
            raise LogoError(f"JUPYTERHUB_LOGO_URI={uri!r} cannot be downloaded: {exc}") from exc
        if media not in EXTENSIONS:
            media = mimetypes.guess_type(parsed.path)[0] or media
        return _write(workdir, media, data, uri)
    raise LogoError(f"JUPYTERHUB_LOGO_URI={uri!r} is not valid; use an http(s):// URL, a file:// path or a data: URI")


def _write(workdir: Path, media: str, data: bytes, uri: str) -> Path:
    if media not in EXTENSIONS:
        raise LogoError(f"JUPYTERHUB_LOGO_URI: {media!r} is not an image type; use PNG, SVG, JPEG, GIF or WebP")
    if not data or len(data) > MAX_BYTES:
        raise LogoError(
            f"JUPYTERHUB_LOGO_URI: the image must be 1 byte to {MAX_BYTES // 1024} KiB, got {len(data)} bytes"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"logo{EXTENSIONS[media]}"
    path.write_bytes(data)
    return path
