"""Operator commands. For now: ``xcomstash inspect FILE`` prints what a stored object is,
read from the object alone (no database, no Airflow)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xcomstash import __version__, objectformat
from xcomstash.stores.local import FileReader


def _inspect(path: Path) -> int:
    try:
        with FileReader(path) as reader:
            layout = objectformat.read_layout(reader.size, reader.read_at)
    except (OSError, objectformat.ObjectFormatError) as exc:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xcomstash", description=__doc__)
    parser.add_argument("--version", action="version", version=f"xcomstash {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="describe a stored object file (header, sizes, digest)")
    inspect.add_argument("path", type=Path)
    args = parser.parse_args(argv)
    if args.command == "inspect":
        return _inspect(args.path)
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
