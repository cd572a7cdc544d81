"""Reading back what an offline W&B run wrote (no API key, no network)."""

from __future__ import annotations

from pathlib import Path


def read_wandb_records(path: Path) -> list:
    """Decode the protobuf records of an offline W&B run file (``run-<id>.wandb``).

    The file is a 7-byte header (``:W&B``, magic, version) followed by LevelDB-log style 32 KiB blocks of
    chunks: CRC32 (4 bytes), length (2), type (1: full, 2: first, 3: middle, 4: last), payload.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    data, block, pos = path.read_bytes(), 32768, 7
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    payloads, partial = [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer: too small for a chunk header
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(chunk)
        elif kind in (2, 3):
            partial = (partial if kind == 3 else b"") + chunk
        elif kind == 4:
            payloads.append(partial + chunk)
    records = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records
