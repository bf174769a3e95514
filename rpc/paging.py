"""Page tokens and page sizes for the paged reads (ListKeys, ScanPrefix, KeyHistory).

A token carries everything the next page needs, so the daemon keeps no
cursor and a token outlives a restart. It is urlsafe base64 (unpadded) of:

  u8 format (1) | 8-byte fingerprint | u64 number | tail

`number` is the commit_ts a listing is read as of, or the next (older)
version a history reads; `tail` is the last key a listing returned (UTF-8),
empty for a history. The fingerprint is a hash of the request's kind and
names, so a token sent with another request is refused rather than
misread. Tokens are not secret: a forged one can only ask for what a
request could ask for anyway.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

from actors import InvalidArgument

_FORMAT = 1
_HEAD = struct.Struct(">B8sQ")


def _fingerprint(scope: tuple[str, ...]) -> bytes:
    # Names cannot contain NUL, so joining on it is unambiguous.
    return hashlib.blake2b("\x00".join(scope).encode("utf-8"), digest_size=8).digest()


def encode(scope: tuple[str, ...], number: int, tail: str = "") -> str:
    """A token for the request described by `scope` (kind, then names)."""
    raw = _HEAD.pack(_FORMAT, _fingerprint(scope), number) + tail.encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(scope: tuple[str, ...], token: str) -> tuple[int, str]:
    """(number, tail) of a token made by `encode` for the same `scope`.

    Raises InvalidArgument for a token that is malformed or was made for
    another request.
    """
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        fmt, fingerprint, number = _HEAD.unpack_from(raw)
        tail = raw[_HEAD.size :].decode("utf-8")
    except (binascii.Error, ValueError, struct.error):
        raise InvalidArgument("page_token is malformed (pass next_page_token back unchanged)") from None
    if fmt != _FORMAT:
        raise InvalidArgument(f"page_token has unknown format {fmt}")
    if fingerprint != _fingerprint(scope):
        raise InvalidArgument(
            "page_token was made for another request; send it with the same "
            "namespace, agent_id and prefix or key as the page that returned it"
        )
    return number, tail


def page_size(limit: int, maximum: int) -> int | None:
    """How many results a page holds: `limit` clamped to `maximum`; None for 0."""
    return min(limit, maximum) if limit else None
