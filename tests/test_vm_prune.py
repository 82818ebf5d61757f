"""`ostune vm prune`: the image cache keeps the current recipes' images, the package cache and
builds in progress, and loses images of other recipes and unfinished builds whose builder died."""

from __future__ import annotations

import fcntl
import os

from targets.vm.image import prune_images, recipe_hash
from tests.helpers import ostune


def _image(path, mib: int = 1):
    path.mkdir()
    (path / "manifest.json").write_text("{}")
    with open(path / "disk.qcow2", "wb") as fh:
        fh.write(os.urandom(mib * 2**20))


def test_prune_keeps_current_images_packages_and_live_builds(tmp_path):
    current = recipe_hash("direct")
    _image(tmp_path / current)
    (tmp_path / f"{current}.lock").touch()
    _image(tmp_path / "0123456789abcdef", mib=2)  # an older recipe
    (tmp_path / "0123456789abcdef.lock").touch()
    _image(tmp_path / f"{current}.tmp-dead")  # a build whose builder was killed
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / "redis.deb").write_text("package")
    grub = recipe_hash("grub")
    _image(tmp_path / f"{grub}.tmp-live")  # being built: its recipe's lock is held
    with open(tmp_path / f"{grub}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        pruned = prune_images(tmp_path)
    assert sorted(e.path.name for e in pruned) == ["0123456789abcdef", f"{current}.tmp-dead"]
    old = next(e for e in pruned if e.path.name == "0123456789abcdef")
    assert old.why == "image of another recipe" and old.size_bytes >= 2 * 2**20
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [current, f"{current}.lock", "debs", f"{grub}.tmp-live", f"{grub}.lock"])
    # once its builder lets go of the lock without finishing, that build is a leftover too
    assert [e.path.name for e in prune_images(tmp_path)] == [f"{grub}.tmp-live"]
    assert prune_images(tmp_path) == []


def test_cli_reports_what_it_freed(tmp_path):
    _image(tmp_path / "0123456789abcdef", mib=3)
    result = ostune("vm", "prune", "--cache-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "removed" in result.stdout and "image of another recipe, 3 MiB" in result.stdout
    assert "1 removed, 3 MiB freed" in result.stdout
    again = ostune("vm", "prune", "--cache-dir", str(tmp_path))
    assert again.returncode == 0 and "nothing to remove" in again.stdout
