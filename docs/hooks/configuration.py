"""mkdocs hook: the configuration reference page, generated from the provider's ``[xcomstash]``
section (``xcomstash.airflow.provider``), so the docs and ``airflow config list`` never differ."""

from __future__ import annotations

from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "configuration.md"


def render() -> str:
    from xcomstash.airflow.provider import _OPTIONS

    lines = [
        "# Configuration reference",
        "",
        "Every option of the `[xcomstash]` section of `airflow.cfg`, also settable as",
        "`AIRFLOW__XCOMSTASH__<OPTION>`. `airflow config list --section xcomstash",
        "--include-descriptions` prints the same text. Generated from the provider's configuration.",
        "",
        "| option | default | example |",
        "|---|---|---|",
    ]
    for name, spec in _OPTIONS.items():
        lines.append(f"| [`{name}`](#{name}) | `{spec.get('default') or ''}` | `{spec.get('example') or ''}` |")
    for name, spec in _OPTIONS.items():
        lines += ["", f"## {name}", "", spec["description"].strip(), "",
                  f"Type `{spec.get('type', 'string')}`, default `{spec.get('default') or ''}`, "
                  f"since {spec.get('version_added', '')}."]
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=render()))
    return files
