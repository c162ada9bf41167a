"""Downloading, verifying and caching the released datasets, with Google Drive replaced by fakes."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import types
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from lgmrec.cli import main
from lgmrec.data import load_dataset
from lgmrec.datasets import fetch
from lgmrec.datasets.fetch import (
    CHECKSUM_FILE,
    SOURCES,
    DatasetStats,
    dataset_folder,
    default_root,
    fetch_dataset,
    find_real_dataset,
    gdown_downloader,
    reference_stats,
)
from lgmrec.errors import DataError
from lgmrec.synthetic import write_dataset

LGMREC_URL, MMREC_URL = SOURCES[0].url, SOURCES[1].url


@pytest.fixture(scope="module")
def released(tmp_path_factory, tiny_data):
    """A stand-in for the released 'baby' folder (tiny synthetic data in the MMRec format)."""
    folder = write_dataset(tiny_data, tmp_path_factory.mktemp("drive") / "baby")
    (folder / "u_id_mapping.csv").write_text("user_id\tuserID\nAX\t0\n")
    return folder


@pytest.fixture(scope="module")
def stats(released):
    return DatasetStats.of(load_dataset(released))


class FakeDrive:
    """Downloader that copies the stand-in folder the way gdown lays out a Drive folder."""

    def __init__(self, released: Path, fail_for=(), mutate=None):
        self.released, self.fail_for, self.mutate, self.calls = released, set(fail_for), mutate, []

    def __call__(self, url: str, name: str, destination: Path) -> None:
        self.calls.append((url, name))
        target = destination / "data" / name
        shutil.copytree(self.released, target)
        if url in self.fail_for:  # fail half-way: a partial download exists at this point
            raise ConnectionError(f"Failed to retrieve folder contents of {url}")
        if self.mutate:
            self.mutate(target)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_reference_statistics_come_with_the_package():
    baby = reference_stats("baby")
    assert baby == DatasetStats(users=19445, items=7050, interactions=160792, train=118551,
                                valid=20559, test=21682, visual_dim=4096, text_dim=384)
    assert reference_stats("clothing").items == 23033
    assert reference_stats("elec") is None


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("LGMREC_DATA_DIR", str(tmp_path / "data"))
    assert default_root() == tmp_path / "data"
    assert dataset_folder("sports") == tmp_path / "data" / "sports"
    assert dataset_folder("sports", root=tmp_path / "x") == tmp_path / "x" / "sports"
    monkeypatch.delenv("LGMREC_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_root() == tmp_path / "cache" / "lgmrec" / "datasets"


def test_fetch_puts_verified_files_in_place_and_second_call_is_a_noop(tmp_path, released, stats):
    drive = FakeDrive(released)
    folder = fetch_dataset("baby", tmp_path, downloader=drive, expected=stats, quiet=True)
    assert folder == tmp_path / "baby"
    assert drive.calls == [(LGMREC_URL, "baby")]
    assert _leftovers(tmp_path) == ["baby"]  # the temporary download folder is gone
    assert {p.name for p in folder.iterdir()} == {
        "baby.inter", "image_feat.npy", "text_feat.npy", "u_id_mapping.csv", CHECKSUM_FILE}
    assert DatasetStats.of(load_dataset(folder)) == stats

    record = json.loads((folder / CHECKSUM_FILE).read_text())
    assert record["statistics"]["users"] == stats.users
    for name in ("baby.inter", "image_feat.npy", "text_feat.npy"):
        assert record["files"][name]["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()

    def must_not_download(*args):
        raise AssertionError("downloader called although the data is present")

    assert fetch_dataset("baby", tmp_path, downloader=must_not_download, expected=stats, quiet=True) == folder
    assert find_real_dataset("baby", tmp_path, expected=stats) == folder


def test_downloader_failure_gives_manual_instructions_and_leaves_nothing(tmp_path, released, stats):
    drive = FakeDrive(released, fail_for={LGMREC_URL, MMREC_URL})
    with pytest.raises(DataError) as info:
        fetch_dataset("baby", tmp_path / "root", downloader=drive, expected=stats, quiet=True)
    message = str(info.value)
    assert "\n" not in message
    assert LGMREC_URL in message and MMREC_URL in message  # what to download
    assert str(tmp_path / "root" / "baby") + "/" in message  # where to put it
    assert "baby.inter" in message and "image_feat.npy" in message and "text_feat.npy" in message
    assert "Failed to retrieve folder contents" in message  # why it failed
    assert [url for url, _ in drive.calls] == [LGMREC_URL, MMREC_URL]
    assert _leftovers(tmp_path / "root") == []
    assert find_real_dataset("baby", tmp_path / "root", expected=stats) is None


def test_second_source_is_used_when_the_first_fails(tmp_path, released, stats):
    drive = FakeDrive(released, fail_for={LGMREC_URL})
    folder = fetch_dataset("baby", tmp_path, downloader=drive, expected=stats, quiet=True)
    assert [url for url, _ in drive.calls] == [LGMREC_URL, MMREC_URL]
    assert _leftovers(tmp_path) == ["baby"] and (folder / CHECKSUM_FILE).is_file()


def test_clothing_has_only_the_lgmrec_source(tmp_path, released, stats):
    drive = FakeDrive(released, fail_for={LGMREC_URL})
    with pytest.raises(DataError, match="1BxObpWApHbGx9jCQGc8z52cV3t9_NE0f") as info:
        fetch_dataset("clothing", tmp_path, downloader=drive, expected=stats, quiet=True)
    assert MMREC_URL not in str(info.value)
    assert _leftovers(tmp_path) == []


def test_interrupt_during_download_leaves_nothing(tmp_path, released, stats):
    def interrupted(url, name, destination):
        (destination / "baby").mkdir()
        (destination / "baby" / "image_feat.npy").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch_dataset("baby", tmp_path, downloader=interrupted, expected=stats, quiet=True)
    assert _leftovers(tmp_path) == []


def test_wrong_statistics_are_rejected(tmp_path, released, stats):
    wrong = replace(stats, users=stats.users + 1, test=stats.test - 2)
    with pytest.raises(DataError) as info:
        fetch_dataset("baby", tmp_path, downloader=FakeDrive(released), expected=wrong, quiet=True)
    message = str(info.value)
    assert f"users {stats.users} (expected {stats.users + 1})" in message
    assert f"test {stats.test} (expected {stats.test - 2})" in message
    assert _leftovers(tmp_path) == []


def test_the_paper_statistics_reject_the_tiny_stand_in(tmp_path, released):
    with pytest.raises(DataError, match=r"users \d+ \(expected 19445\)"):
        fetch_dataset("baby", tmp_path, downloader=FakeDrive(released), quiet=True)
    assert _leftovers(tmp_path) == []


def test_download_without_features_is_rejected(tmp_path, released, stats):
    drive = FakeDrive(released, mutate=lambda folder: (folder / "text_feat.npy").unlink())
    with pytest.raises(DataError, match="lacks text_feat.npy"):
        fetch_dataset("baby", tmp_path, downloader=drive, expected=stats, quiet=True)
    assert _leftovers(tmp_path) == []


def test_download_with_a_broken_feature_file_is_rejected(tmp_path, released, stats):
    drive = FakeDrive(released, mutate=lambda folder: (folder / "image_feat.npy").write_bytes(b"junk"))
    with pytest.raises(DataError, match="image_feat.npy: not a readable .npy"):
        fetch_dataset("baby", tmp_path, downloader=drive, expected=stats, quiet=True)
    assert _leftovers(tmp_path) == []


def test_zipped_dataset_folder_is_unpacked(tmp_path, released, stats):
    def zipped(url, name, destination):
        with zipfile.ZipFile(destination / "Baby.zip", "w") as bundle:
            for path in released.iterdir():
                bundle.write(path, f"Baby/{path.name.replace('baby', 'Baby')}")

    folder = fetch_dataset("baby", tmp_path, downloader=zipped, expected=stats, quiet=True)
    assert (folder / "baby.inter").is_file()
    assert DatasetStats.of(load_dataset(folder)) == stats


def test_change_after_verification_is_detected(tmp_path, released, stats):
    folder = fetch_dataset("baby", tmp_path, downloader=FakeDrive(released), expected=stats, quiet=True)
    data = bytearray((folder / "image_feat.npy").read_bytes())
    data[-1] ^= 0xFF  # same size, one bit pattern changed
    (folder / "image_feat.npy").write_bytes(bytes(data))

    with pytest.warns(UserWarning, match="image_feat.npy: sha256 changed"):
        assert find_real_dataset("baby", tmp_path, expected=stats) is None
    with pytest.raises(DataError, match="--force"):
        fetch_dataset("baby", tmp_path, downloader=FakeDrive(released), expected=stats, quiet=True)

    drive = FakeDrive(released)
    fetch_dataset("baby", tmp_path, downloader=drive, expected=stats, force=True, quiet=True)
    assert len(drive.calls) == 1 and _leftovers(tmp_path) == ["baby"]
    assert find_real_dataset("baby", tmp_path, expected=stats) == folder


def test_truncated_file_after_verification_is_detected(tmp_path, released, stats):
    folder = fetch_dataset("baby", tmp_path, downloader=FakeDrive(released), expected=stats, quiet=True)
    (folder / "text_feat.npy").write_bytes((folder / "text_feat.npy").read_bytes()[:-10])
    with pytest.warns(UserWarning, match="text_feat.npy: size changed"):
        assert find_real_dataset("baby", tmp_path, expected=stats) is None


def test_files_placed_by_hand_are_verified_and_recorded(tmp_path, released, stats):
    shutil.copytree(released, tmp_path / "baby")

    def must_not_download(*args):
        raise AssertionError("downloader called although the data is present")

    folder = fetch_dataset("baby", tmp_path, downloader=must_not_download, expected=stats, quiet=True)
    assert (folder / CHECKSUM_FILE).is_file()
    wrong = replace(stats, items=stats.items + 5)
    with pytest.raises(DataError, match="recorded statistics differ"):
        fetch_dataset("baby", tmp_path, downloader=must_not_download, expected=wrong, quiet=True)


def test_files_placed_by_hand_with_wrong_statistics(tmp_path, released, stats):
    shutil.copytree(released, tmp_path / "baby")
    wrong = replace(stats, valid=stats.valid + 1)
    with pytest.warns(UserWarning, match="valid"):
        assert find_real_dataset("baby", tmp_path, expected=wrong) is None
    assert not (tmp_path / "baby" / CHECKSUM_FILE).exists()


def test_published_checksums_are_enforced(tmp_path, released, stats):
    with pytest.raises(DataError, match="differs from the published checksum"):
        fetch_dataset("baby", tmp_path, downloader=FakeDrive(released), expected=stats,
                      known_checksums={"text_feat.npy": "0" * 64}, quiet=True)
    assert _leftovers(tmp_path) == []
    good = hashlib.sha256((released / "text_feat.npy").read_bytes()).hexdigest()
    fetch_dataset("baby", tmp_path, downloader=FakeDrive(released), expected=stats,
                  known_checksums={"text_feat.npy": good}, quiet=True)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'elec'"):
        fetch_dataset("elec", tmp_path, downloader=lambda *a: None)


def test_gdown_downloader_takes_only_the_requested_dataset(tmp_path, monkeypatch):
    listing = [
        types.SimpleNamespace(id="id-inter", path="baby/baby.inter"),
        types.SimpleNamespace(id="id-image", path="baby/image_feat.npy"),
        types.SimpleNamespace(id="id-sports", path="sports/sports.inter"),
        types.SimpleNamespace(id="id-readme", path="README.txt"),
        types.SimpleNamespace(id="id-zip", path="Baby.zip"),
    ]
    downloaded = []

    def download_folder(url, skip_download, quiet):
        assert url == LGMREC_URL and skip_download
        return listing

    def download(id, output, quiet):
        downloaded.append((id, Path(output).relative_to(tmp_path).as_posix()))
        Path(output).write_text(id)
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download_folder=download_folder, download=download))
    gdown_downloader(LGMREC_URL, "baby", tmp_path)
    assert downloaded == [("id-inter", "baby/baby.inter"), ("id-image", "baby/image_feat.npy"),
                          ("id-zip", "Baby.zip")]

    with pytest.raises(RuntimeError, match="no 'clothing' sub-folder"):
        gdown_downloader(LGMREC_URL, "clothing", tmp_path)
    listing.append(types.SimpleNamespace(id="evil", path="baby/../../escape.npy"))
    with pytest.raises(RuntimeError, match="outside the download folder"):
        gdown_downloader(LGMREC_URL, "baby", tmp_path / "sub")


# ----------------------------------------------------------------------------- command line


def test_cli_path_and_fetch(tmp_path, released, stats, monkeypatch, capsys):
    root = str(tmp_path / "root")
    assert main(["data", "path", "baby", "--root", root]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(tmp_path / "root" / "baby") and "not present" in captured.err
    assert main(["data", "path", "baby", "--root", root, "--check"]) == 1
    capsys.readouterr()

    # offline: the real downloader fails; the command prints one line and exits with 2
    monkeypatch.setattr(fetch, "gdown_downloader", FakeDrive(released, fail_for={LGMREC_URL, MMREC_URL}))
    assert main(["data", "fetch", "baby", "--root", root, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not fetch dataset 'baby'") and LGMREC_URL in err and "\n" not in err
    assert _leftovers(tmp_path / "root") == []

    # the tiny stand-in cannot pass the paper's statistics, so verify against its own
    monkeypatch.setattr(fetch, "reference_stats", lambda name: stats)
    monkeypatch.setattr(fetch, "gdown_downloader", FakeDrive(released))
    assert main(["data", "fetch", "baby", "--root", root, "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "root" / "baby")
    assert main(["data", "path", "baby", "--root", root, "--check"]) == 0
    assert "present and verified" in capsys.readouterr().err
