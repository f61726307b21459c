"""mmss_lib.utils: atomic writes keep the user's umask (issue 38, X1)."""

from __future__ import annotations

import os
import stat

import pytest

from mmss_lib import utils


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_the_umask_not_0600(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        assert utils.current_umask() == mask
        utils.atomic_write_text(tmp_path / "table.csv", "a,b\n")
        utils.atomic_write_json(tmp_path / "sub" / "manifest.json", {"a": 1})
        with utils.atomic_path(tmp_path / "fig.png") as tmp:
            tmp.write_bytes(b"png")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives under this umask
    finally:
        os.umask(old)
    for name in ("table.csv", "sub/manifest.json", "fig.png"):
        got = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert got == mode == stat.S_IMODE(plain.stat().st_mode), (name, oct(got))
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left
