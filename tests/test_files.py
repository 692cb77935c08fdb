"""Atomic writes: the target appears only complete; a failed write leaves the old file and no debris."""

import pytest

from camal_rl.files import atomic_path, write_text_atomic


def test_failed_write_keeps_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "summary.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as partial:
            partial.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_partial_name_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "video.mp4") as partial:
        assert partial.suffix == ".mp4" and partial != tmp_path / "video.mp4"
        partial.write_bytes(b"x")
    assert (tmp_path / "video.mp4").read_bytes() == b"x"
