"""``xcomstash inspect FILE``: what a stored object is, read from the object alone (no
database, no Airflow)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xcomstash.format import container
from xcomstash.stores.local import FileReader


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("inspect", help="describe a stored object file (header, sizes, digest)")
    parser.add_argument("path", type=Path)
    parser.set_defaults(func=lambda args: inspect(args.path))


def inspect(path: Path) -> int:
    try:
        with FileReader(path) as reader:
            layout = container.read_layout(reader.size, reader.read_at)
    except (OSError, container.ObjectFormatError) as exc:
        print(f"{path}: not a valid xcomstash object: {exc}", file=sys.stderr)
        return 1
    header = layout.header
    report = {
        "file": str(path),
        "size": reader.size,
        "digest": layout.digest,
        "format": header.format,
        "codec": header.codec,
        "codec_meta": header.codec_meta,
        "compression": header.compression,
        "python_type": header.python_type,
        "xcom": header.xcom,
        "body_size": layout.body_size,
        "raw_size": layout.raw_size,
        "frames": len(layout.frames),
        "compressed_frames": sum(1 for f in layout.frames if f.method),
    }
    print(json.dumps(report, indent=2))
    return 0
