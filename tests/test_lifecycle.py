"""What the driver checks before it writes anything: a root, storage or store it cannot write,
data no trial can find. No Ray runtime needed."""

import os

import pytest
from conftest import TINY_BASE

from sweeps.lifecycle import check_data_roots, check_writable
from sweeps.locations import Locations, SweepError
from sweeps.spec import parse_spec


def spec_with(data_variants: list[dict]) -> object:
    return parse_spec(
        {
            "name": "data",
            "trainable": "contrastive",
            "base": TINY_BASE,
            "space": {"data": {"grid": data_variants}},
            "search": {"metric": "probe/object/pre"},
        }
    )


def test_a_sweep_whose_trials_cannot_find_their_data_is_refused(tmp_path):
    missing = {"name": "cifar10", "root": str(tmp_path / "no-data")}
    with pytest.raises(SweepError, match=r"data.root: .*cifar10 under .*no-data"):
        check_data_roots(spec_with([missing]))
    check_data_roots(spec_with([missing, {"name": "digits_on_texture"}]))  # some can start
    check_data_roots(spec_with([{**missing, "download": True}]))


def test_a_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SweepError, match="is a file"):
        check_writable(Locations.make(tmp_path / "file" / "runs"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_root_is_refused_before_anything_is_written(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SweepError, match="is not writable"):
            check_writable(Locations.make(locked / "runs"))
    finally:
        locked.chmod(0o700)
    assert not (locked / "runs").exists()
