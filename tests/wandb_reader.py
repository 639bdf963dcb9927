"""Reads an offline W&B run's transaction log (``run-<id>.wandb``) back, for tests.

The file is a 7-byte header (``:W&B``, magic 0xBEE1, version) followed by LevelDB-style log blocks of 32 KiB:
each chunk has a 7-byte header (CRC32C, little-endian length, type FULL/FIRST/MIDDLE/LAST) and chunks join into
serialised ``wandb_internal_pb2.Record`` protobufs.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, records, pending = 7, [], b""
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        if len(chunk) < length:  # the writer is still appending this chunk: what follows is not there yet
            break
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def read_finished_records(path: Path, wait_s: float = 15.0) -> list:
    """The records once the run's ``exit`` record is in the file: the W&B service may still be writing it for a
    moment after ``run.finish()`` returns. After ``wait_s`` seconds, whatever is there."""
    deadline = time.monotonic() + wait_s
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def read_run(path: Path) -> dict:
    """Name, group, config (nested, values JSON-decoded), and the logged history rows of one offline run."""
    run, config, history = {}, {}, []
    for record in read_finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = {"name": record.run.display_name, "group": record.run.run_group, "job_type": record.run.job_type}
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            history.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return {**run, "config": config, "history": history}
