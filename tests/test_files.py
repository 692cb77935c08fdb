"""Atomic writes: the target appears only complete; a failed write leaves the old file and no debris."""

import pytest

from camal_rl.files import atomic_path, save_figure, write_text_atomic


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


def test_a_figure_that_cannot_be_written_leaves_the_old_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib", reason="rliable installs matplotlib")
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    target = tmp_path / "curves.png"
    figure, axis = plt.subplots()
    axis.plot([0, 1], [1, 0])
    save_figure(figure, target, dpi=20)
    first = target.read_bytes()
    assert first.startswith(b"\x89PNG")
    (tmp_path / "curves.partial.png").symlink_to("/dev/full")  # every write to it: ENOSPC, half-way through
    axis.plot([0, 1], [0, 1])
    with pytest.raises(OSError) as caught:
        save_figure(figure, target, dpi=20)
    plt.close(figure)
    assert "curves.png" in str(caught.value)
    assert target.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]
