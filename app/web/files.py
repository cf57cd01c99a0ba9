"""Stored files as HTTP responses, streamed from any storage backend."""

import mimetypes
from collections.abc import Iterator
from urllib.parse import quote

from fastapi.responses import StreamingResponse

from app.storage import Reader, Storage

STREAM_CHUNK_BYTES = 64 * 1024


def file_response(storage: Storage, key: str, media_type: str | None = None,
                  filename: str | None = None,
                  headers: dict[str, str] | None = None) -> StreamingResponse:
    """The bytes under `key`, a chunk at a time (a missing key raises StorageError: 404).

    `filename` makes it a download (Content-Disposition); the media type is then guessed
    from it when not given, as Starlette's FileResponse does.
    """
    size = storage.size(key)
    reader = storage.open(key)
    headers = {**(headers or {}), "Content-Length": str(size)}
    if filename is not None:
        media_type = media_type or mimetypes.guess_type(filename)[0]
        quoted = quote(filename)
        headers["Content-Disposition"] = (f'attachment; filename="{filename}"' if quoted == filename
                                          else f"attachment; filename*=utf-8''{quoted}")
    return StreamingResponse(_chunks(reader), media_type=media_type or "text/plain",
                             headers=headers)


def _chunks(reader: Reader) -> Iterator[bytes]:
    try:
        while chunk := reader.read(STREAM_CHUNK_BYTES):
            yield chunk
    finally:
        reader.close()
