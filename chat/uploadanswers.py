"""What an HTTP upload is answered: the status of each error, its words, the bodies.

``status_of`` maps an upload's error (or the reason it was ``refused``) to an
HTTP status; ``words`` and ``error_body`` word it, as text or as the chat's
JSON; ``stored_body`` and ``file_url`` make the ``201 Created``;
``upload_error`` makes the errors this endpoint words itself (``render``
knows only the chat's); ``CHALLENGE_BEARER`` and ``CHALLENGE_BASIC`` are the
``WWW-Authenticate`` challenges of a 401.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

from chat import events as ev
from chat.httpchannel import TEXT_PLAIN
from chat.render import REFUSALS, JsonRenderer, error_text
from chat.units import human_size, plural
from chat.uploadheaders import JSON

REALM = "lanchat"
CHALLENGE_BEARER = f'Bearer realm="{REALM}"'
CHALLENGE_BASIC = f'Basic realm="{REALM}", charset="UTF-8"'

_RENDER = JsonRenderer()


#: The HTTP status of each error code an upload can end with.
_STATUS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "Bad Request"),
    "unauthorised": (401, "Unauthorized"),
    "bad_session": (401, "Unauthorized"),
    "bad_password": (401, "Unauthorized"),
    "banned": (403, "Forbidden"),
    "upload_stalled": (408, "Request Timeout"),
    "not_in_room": (409, "Conflict"),
    "length_required": (411, "Length Required"),
    "too_large": (413, "Content Too Large"),
    "unsupported_coding": (415, "Unsupported Media Type"),
    "crc_mismatch": (422, "Unprocessable Content"),
    "digest_mismatch": (422, "Unprocessable Content"),
    "too_many_attempts": (429, "Too Many Requests"),
    "bad_offset": (409, "Conflict"),
    "store_failed": (500, "Internal Server Error"),
    "internal": (500, "Internal Server Error"),
}
#: ... and of each reason a well-formed upload is ``refused`` for (``name_*``: 400).
_REFUSED_STATUS: dict[str, tuple[int, str]] = {
    "quota": (403, "Forbidden"),
    "daily_quota": (403, "Forbidden"),
    "in_progress": (409, "Conflict"),
    "reservation": (429, "Too Many Requests"),
    "disk": (507, "Insufficient Storage"),
}


def status_of(error: ev.Error) -> tuple[int, str]:
    if error.code == "refused":
        reason = str(error.params.get("reason", ""))
        if reason.startswith("name_"):
            return 400, "Bad Request"
        return _REFUSED_STATUS.get(reason, (403, "Forbidden"))
    return _STATUS.get(error.code, (400, "Bad Request"))


def words(error: ev.Error) -> str:
    """The words of an upload's error. A refusal says nothing was read: the
    chat's own words ("the bytes are discarded") describe ``/send``."""
    if error.code == "refused" and error.text is None:
        template = REFUSALS.get(str(error.params.get("reason")))
        if template is not None:
            values = dict(error.params)
            for key in ("limit", "size", "quota", "used"):
                if isinstance(values.get(key), int):
                    values[f"{key}_human"] = human_size(values[key])
            try:
                return template.format_map(values) + " Nothing was read or stored."
            except (KeyError, ValueError):
                pass
    return error_text(error)


def upload_error(code: str, text: str, **params: Any) -> ev.Error:
    """An error of this endpoint's own, worded here (``render`` knows only the chat's)."""
    return ev.Error(code, "upload", params, text)


def error_body(error: ev.Error, as_json: bool) -> tuple[str, str]:
    """``(body, content type)`` of an error answer."""
    error = dataclasses.replace(error, command="upload", text=words(error))
    if as_json:
        return _RENDER.render(error).decode("utf-8").rstrip("\r\n") + "\n", JSON
    return error.text + "\n", TEXT_PLAIN  # type: ignore[operator]


def file_url(info: ev.FileInfo) -> str:
    """The file's URL; relative if the server does not know its own address."""
    return info.url or f"/files/{info.file_id}/{quote(info.name, safe='')}"


def stored_body(info: ev.FileInfo, as_json: bool) -> tuple[str, str]:
    """``(body, content type)`` of a ``201 Created``."""
    if as_json:
        return _RENDER.render(ev.Uploaded(info)).decode("utf-8").rstrip("\r\n") + "\n", JSON
    return (
        f"Stored {info.name}: id {info.file_id}, {plural(info.size, 'byte')}, "
        f"CRC-32 {info.crc32}.\n{file_url(info)}\n"
    ), TEXT_PLAIN
