from __future__ import annotations

import os
import stat

from xcomstash.cli import main
from xcomstash.security.crypto.keyset import read_keyset_file


def test_generate_rotate_list_remove(tmp_path, capsys) -> None:
    path = tmp_path / "keys.json"
    assert main(["keys", "generate", str(path)]) == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    first = read_keyset_file(path).primary_id
    assert main(["keys", "generate", str(path)]) == 1  # never overwrites
    assert main(["keys", "rotate", str(path)]) == 0
    rotated = read_keyset_file(path)
    assert rotated.primary_id != first and first in rotated.ids
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    capsys.readouterr()
    assert main(["keys", "list", str(path)]) == 0
    listing = capsys.readouterr().out
    assert f"{rotated.primary_id}\tprimary" in listing and f"{first}\tolder" in listing
    assert '"secret"' not in listing and rotated.primary.secret.hex() not in listing
    assert main(["keys", "remove", str(path), rotated.primary_id]) == 1  # not the primary
    assert main(["keys", "remove", str(path), "knothere"]) == 1
    assert main(["keys", "remove", str(path), first]) == 0
    assert read_keyset_file(path).ids == (rotated.primary_id,)


def test_world_readable_keyset_is_warned_about(tmp_path, capsys) -> None:
    path = tmp_path / "keys.json"
    main(["keys", "generate", str(path)])
    os.chmod(path, 0o644)
    assert main(["keys", "list", str(path)]) == 0
    assert "chmod 600" in capsys.readouterr().err
