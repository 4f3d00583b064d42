"""``xcomstash inspect OBJECT``: what a stored object is, read from the object alone (its
header, frame table and footer; no database row, no value decoded).

OBJECT is a local file or a URI as references and the Airflow UI show it (``s3://...``,
``gs://...``, ``file://...``): a URI is read from the configured store (``--store-url``, else
``[xcomstash] store_url``), from whichever of its locations it names."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from xcomstash.commands import _common
from xcomstash.format import container

DESCRIPTION = """\
Describe a stored object: format, codec, compression, encryption key id, the XCom its header
names, sizes and frames. Only the header, the frame table and the footer are read.

  xcomstash inspect s3://my-bucket/xcom/etl/manual__2026-01-01/.blobs/ab12....xcs
  xcomstash inspect /var/xcom/etl/manual__2026-01-01/load/-1/return_value.xcs --json

Exit status: 0 described; 1 the object could not be read or is not an xcomstash object.
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = _common.add_command(sub, "inspect", "describe a stored object (header, sizes, digest)", DESCRIPTION)
    parser.add_argument("object", metavar="OBJECT", help="a local file, or a store URI (s3://, gs://, file://, ...)")
    _common.add_common_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from xcomstash.errors import XComStashError

    target: str = args.object
    try:
        if "://" in target and not target.startswith("file://"):
            report = _describe_in_store(args, target)
        else:
            report = _describe_file(Path(target[len("file://"):] if target.startswith("file://") else target))
    except (OSError, container.ObjectFormatError, XComStashError) as exc:
        return _common.fail(f"{target}: not a readable xcomstash object: {exc}")
    if args.json:
        print(json.dumps(report, indent=2, default=str), file=_common.out(args))
        return _common.EXIT_OK
    width = max(len(k) for k in report)
    for key, value in report.items():
        shown = json.dumps(value, default=str) if isinstance(value, (dict, list)) else value
        print(f"{key:<{width}}  {shown}")
    return _common.EXIT_OK


def _describe_file(path: Path) -> dict[str, Any]:
    from xcomstash.stores.local import FileReader

    with FileReader(path) as reader:
        return _report(str(path), reader)


def _describe_in_store(args: argparse.Namespace, uri: str) -> dict[str, Any]:
    """Read ``uri`` from the location of the configured store whose root it lies under."""
    from xcomstash.errors import ConfigError
    from xcomstash.pipeline.repair import locations_of, replicated_groups

    store = _common.open_store(args)
    candidates = [loc for group in replicated_groups(store) for loc in group] or list(locations_of(store))
    for location in candidates:
        if uri.startswith(location.root_uri + "/"):
            reader = location.open_reader(location.key_for(uri))
            try:
                return _report(uri, reader)
            finally:
                reader.close()
    roots = ", ".join(loc.root_uri for loc in candidates)
    raise ConfigError(f"it is not under the configured store ({roots}); give the store with --store-url")


def _report(name: str, reader: Any) -> dict[str, Any]:
    layout = container.read_layout(reader.size, reader.read_at)
    header = layout.header
    return {
        "object": name,
        "size": reader.size,
        "digest": layout.digest,
        "format": header.format,
        "codec": header.codec,
        "codec_meta": header.codec_meta,
        "compression": header.compression,
        "encryption": (header.encryption or {}).get("alg"),
        "python_type": header.python_type,
        "xcom": header.xcom,
        "body_size": layout.body_size,
        "raw_size": layout.raw_size,
        "frames": len(layout.frames),
        "compressed_frames": sum(1 for f in layout.frames if f.method),
    }
