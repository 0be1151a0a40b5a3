"""What `thresher up` says about the local paths that file sources may read (inputs.local_roots)."""

from __future__ import annotations

from pathlib import Path

from thresher.tools.cli import _local_inputs


def test_no_roots_means_no_local_input_and_says_how_to_allow_one(tmp_path: Path) -> None:
    assert _local_inputs("", tmp_path / "data") == "none (--local-roots DIR lets file sources read DIR)"


def test_a_root_apart_from_the_data_dir_is_shown_as_it_is(tmp_path: Path) -> None:
    roots = f"{tmp_path}/in:{tmp_path}/more"
    assert _local_inputs(roots, tmp_path / "data") == roots


def test_a_root_that_holds_the_data_dir_gets_a_warning(tmp_path: Path) -> None:
    for roots in (str(tmp_path), "/", f"{tmp_path}/in:{tmp_path}/data"):
        said = _local_inputs(roots, tmp_path / "data")
        assert said.startswith(roots) and "WARNING" in said and "admin key" in said, said
