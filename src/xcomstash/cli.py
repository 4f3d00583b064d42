"""Operator commands. For now: ``xcomstash inspect FILE`` prints what a stored object is,
read from the object alone (no database, no Airflow)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from xcomstash import __version__, objectformat


def _inspect(path: Path) -> int:
    data = path.read_bytes()
    try:
        header, body, footer = objectformat.parse(data)
    except objectformat.ObjectFormatError as exc:
        print(f"{path}: not a valid xcomstash object: {exc}", file=sys.stderr)
        return 1
    report = {
        "file": str(path),
        "size": len(data),
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "format": header.format,
        "codec": header.codec,
        "codec_meta": header.codec_meta,
        "compression": header.compression,
        "python_type": header.python_type,
        "xcom": header.xcom,
        "body_size": footer.body_size,
        "raw_size": footer.raw_size,
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
