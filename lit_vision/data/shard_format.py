"""The on-disk format of lit_vision's litdata shards: what the writer (``lit_vision.data.shards``) produces
and the reader (``lit_vision.data.streaming``) checks. Both import it; neither imports the other for it."""

from __future__ import annotations

__all__ = ["INCOMPLETE_MARKER", "ITEM_FORMAT", "META_FILE", "SHARD_FORMAT"]

META_FILE = "meta.json"
INCOMPLETE_MARKER = ".lit_vision-shards-incomplete"  # present from the first byte written to meta.json
SHARD_FORMAT = 2  # bump when the item layout, the items' order or meta.json changes (2: train shuffled)
#: litdata's data_format of one item: (image bytes, label, source index). Readers refuse anything else, so a
#: shard folder that declares pickled items (litdata's fallback serializer) is never unpickled.
ITEM_FORMAT = ["bytes", "int", "int"]
