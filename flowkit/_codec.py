"""State <-> JSON-ready data, without pickle, class names or eval.

:func:`encode` turns a state (a dict, or a Pydantic model's ``model_dump(mode="python")``)
into plain ``dict`` / ``list`` / ``str`` / ``int`` / ``float`` / ``bool`` / ``None``;
:func:`decode` turns that back. Values JSON has no type for are written as a small
tagged object, ``{"__fk__": TAG, "v": ...}``:

=============  ==========================================  ============================
tag            Python value                                ``v``
=============  ==========================================  ============================
bytes          ``bytes``                                   standard base64
bytearray      ``bytearray``                               standard base64
datetime       ``datetime`` (naive or aware)               ``isoformat()``
date           ``date``                                    ``isoformat()``
time           ``time`` (naive or aware)                   ``isoformat()``
timedelta      ``timedelta``                               ``[days, seconds, microseconds]``
uuid           ``UUID``                                    canonical string
decimal        ``Decimal``                                 ``str()`` (exact)
set            ``set``                                     items, sorted by their JSON text
frozenset      ``frozenset``                               items, sorted by their JSON text
tuple          ``tuple``                                   items
map            ``dict`` with a key that is not a ``str``   ``[[key, value], ...]``
dict           ``dict`` that has a ``"__fk__"`` key        the dict, taken literally
float          ``nan`` / ``inf`` / ``-inf``                ``"nan"`` / ``"inf"`` / ``"-inf"``
secret_str     ``pydantic.SecretStr``                      Fernet token
secret_bytes   ``pydantic.SecretBytes``                    Fernet token
=============  ==========================================  ============================

Some values are stored as something simpler and come back as that, which a Pydantic
state model turns back into the declared type when it validates the loaded data:

* an ``Enum`` member is stored as its ``.value``;
* a nested Pydantic model as its ``model_dump(mode="python")`` dict;
* a dataclass instance as a dict of its fields;
* subclasses of ``str`` / ``int`` / ``float`` / ``list`` / ``dict`` / ``tuple`` as the base
  type; an aware ``datetime`` / ``time`` keeps its UTC offset, not its ``tzinfo`` object
  (a ``ZoneInfo`` comes back as a fixed offset: the same instant);
* a dict whose keys encode to distinct plain strings (``StrEnum`` keys) as a plain dict.

A set of dataclasses or models comes back as a list of dicts, and a dict keyed by them
as a list of ``[key, value]`` pairs (dicts cannot be set members or keys).

Anything else — ``object()``, functions, generators, clients, sockets — raises
:class:`~flowkit.exceptions.UnserializableStateError` naming its path, such as
``state.items[3].payload``. The functions are pure, so that happens before anything is
written. The output never shares a mutable container with the input, in either
direction.

The walks, and :func:`encode` / :func:`decode` that turn their failures into errors naming
the path, live in ``_codec_encode`` and ``_codec_decode`` (the engine calls them there
directly); what they share (the tag key, failures that collect their path) in
``_codec_walk``.
"""

from __future__ import annotations

import json
from typing import Any

from flowkit._codec_decode import decode
from flowkit._codec_encode import encode
from flowkit._codec_walk import HOW_TO_RECOVER, TAG_KEY, checkpoint_name
from flowkit.exceptions import CorruptCheckpointError

__all__ = ["TAG_KEY", "decode", "dumps", "encode", "loads"]


def dumps(obj: Any) -> str:
    """Compact JSON text for data produced by :func:`encode` (NaN and infinities refused)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(s: str | bytes, *, run_id: str | None = None, seq: int | None = None) -> Any:
    """Parse JSON text written by :func:`dumps`.

    Raises:
        CorruptCheckpointError: ``s`` is not valid JSON (names ``run_id`` / ``seq`` if given).
    """
    try:
        return json.loads(s)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(
            f"{checkpoint_name(run_id, seq)} cannot be read back: it is not valid JSON "
            f"({exc}). {HOW_TO_RECOVER}",
            run_id=run_id or "",
            seq=seq,
        ) from None
