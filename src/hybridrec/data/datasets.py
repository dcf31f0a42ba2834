"""The dataset registry, the data home, and the verified download of the MovieLens zips.

A dataset counts as present when all its files lie in ``<data home>/<directory>/``; only then
is nothing downloaded. Downloads are checked against a SHA-256 and extracted into a temporary
folder inside the data home, then renamed into place, so a half-written dataset never appears.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hybridrec.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "DATA_HOME_ENV",
    "DatasetInfo",
    "data_home",
    "dataset_status",
    "fetch",
    "list_datasets",
]

logger = logging.getLogger(__name__)

DATA_HOME_ENV = "HYBRIDREC_DATA_HOME"
_TIMEOUT_S = 60.0
_CHUNK = 1 << 20

_ML = "https://files.grouplens.org/datasets/movielens"
_LICENSE_REDIST = (
    "GroupLens research license: non-commercial research use, cite Harper & Konstan 2015; "
    "may be redistributed under the same terms (see the dataset's README.txt)"
)
_LICENSE_NO_REDIST = (
    "GroupLens research license: non-commercial research use, cite Harper & Konstan 2015; "
    "redistribution is not allowed (download it from GroupLens)"
)

# MovieLens ratings are 0.5-5 stars; the literature's implicit protocol takes >= 4 as positive.
_ML_DATA: tuple[tuple[str, object], ...] = (("min_rating", 4.0),)


@dataclass(frozen=True)
class DatasetInfo:
    """A downloadable dataset.

    Attributes:
        name: Registry key, e.g. ``"movielens-100k"``.
        description: One line for humans.
        url: The official address of the zip.
        sha256: SHA-256 of the zip, or None when no published hash is known (then the
            download is used unverified, with a warning).
        directory: Folder the zip extracts to, inside the data home.
        files: Files that must exist in ``directory`` for the dataset to count as present.
        license: The usage terms in one line.
        data_defaults: ``[data]`` settings this dataset is known to want, used where the
            config leaves them to be learned (e.g. MovieLens: ratings >= 4 are positives).
    """

    name: str
    description: str
    url: str
    sha256: str | None
    directory: str
    files: tuple[str, ...]
    license: str
    data_defaults: tuple[tuple[str, object], ...] = ()


# All three hashes come from tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt
# (commit 1c076ac3c19c8ea83e1d1a75e0623c9a699e0d7c), which lists URL, size and SHA-256 of each
# zip. The latest-small hash also matches a dataset card in public code for the 978,202-byte zip.
# ml-latest-small is a rolling release: if GroupLens republishes it, this hash must be updated.
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="movielens-latest-small",
            description="MovieLens latest-small: 100,836 ratings and 3,683 tags, 610 users, "
            "9,742 movies",
            url=f"{_ML}/ml-latest-small.zip",
            sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            directory="ml-latest-small",
            files=("ratings.csv", "movies.csv", "links.csv", "tags.csv"),
            license=_LICENSE_REDIST,
            data_defaults=_ML_DATA,
        ),
        DatasetInfo(
            name="movielens-100k",
            description="MovieLens 100K: 100,000 ratings, 943 users, 1,682 movies, demographics",
            url=f"{_ML}/ml-100k.zip",
            sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            directory="ml-100k",
            files=("u.data", "u.item", "u.user"),
            license=_LICENSE_NO_REDIST,
            data_defaults=_ML_DATA,
        ),
        DatasetInfo(
            name="movielens-1m",
            description="MovieLens 1M: 1,000,209 ratings, 6,040 users, about 3,900 movies, "
            "demographics",
            url=f"{_ML}/ml-1m.zip",
            sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            directory="ml-1m",
            files=("ratings.dat", "movies.dat", "users.dat"),
            license=_LICENSE_NO_REDIST,
            data_defaults=_ML_DATA,
        ),
    )
}


def _resolve_home(explicit: str | Path | None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_HOME_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".hybridrec" / "data"


def data_home(explicit: str | Path | None = None) -> Path:
    """Return the folder datasets live in.

    Args:
        explicit: A folder given by the caller; wins over everything else.

    Returns:
        ``explicit``, else ``$HYBRIDREC_DATA_HOME``, else ``~/.hybridrec/data`` (not created).
    """
    return _resolve_home(explicit)


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}"
        ) from None


def _missing(folder: Path, info: DatasetInfo) -> list[str]:
    return [f for f in info.files if not (folder / f).is_file()]


def list_datasets() -> list[DatasetInfo]:
    """Return every registered dataset, sorted by name."""
    return [DATASETS[n] for n in sorted(DATASETS)]


def dataset_status(name: str, data_home: str | Path | None = None) -> dict[str, object]:
    """Describe a dataset and whether it is present, for ``hybridrec datasets info``.

    Args:
        name: A registry key.
        data_home: The data home; defaults as in `data_home`.

    Returns:
        A dict with ``name``, ``description``, ``present``, ``path``, ``files`` and ``license``.

    Raises:
        ConfigError: ``name`` is not registered.
    """
    info = _info(name)
    folder = _resolve_home(data_home) / info.directory
    return {
        "name": info.name,
        "description": info.description,
        "present": not _missing(folder, info),
        "path": str(folder),
        "files": list(info.files),
        "license": info.license,
    }


def _download(url: str, dest: Path) -> str:
    """Stream ``url`` into ``dest`` and return the SHA-256 of what was written."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp, dest.open("wb") as out:
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.URLError as exc:
        raise DataError(f"could not download {url}: {exc.reason}") from None
    except (OSError, ValueError) as exc:
        # Timeouts, resets and malformed URLs arrive here; keep the message to one line.
        raise DataError(f"could not download {url}: {exc}") from None
    return digest.hexdigest()


def fetch(name: str, *, data_home: str | Path | None = None, download: bool = True) -> Path:
    """Return the folder holding a dataset, downloading it first when it is missing.

    Args:
        name: A registry key, e.g. ``"movielens-latest-small"``.
        data_home: The data home; defaults as in `data_home`.
        download: Whether a missing dataset may be downloaded.

    Returns:
        ``<data home>/<directory>``, with all the dataset's files in it.

    Raises:
        ConfigError: ``name`` is not registered.
        DataError: The files are missing and ``download`` is false, the download failed, the
            zip's SHA-256 does not match, or the zip lacks the expected files.
    """
    info = _info(name)
    home = _resolve_home(data_home)
    folder = home / info.directory
    missing = _missing(folder, info)
    if not missing:
        return folder
    if not download:
        raise DataError(
            f"dataset {name!r} not found: missing {', '.join(missing)} in {folder}; put the "
            f"files there, set {DATA_HOME_ENV} to a folder holding {info.directory}/, "
            "or allow the download"
        )

    home.mkdir(parents=True, exist_ok=True)
    # The temp dir sits in the data home so the final rename stays on one filesystem.
    with tempfile.TemporaryDirectory(dir=home, prefix=f".{info.directory}-") as tmp_name:
        tmp = Path(tmp_name)
        archive = tmp / Path(info.url).name
        logger.info("downloading %s from %s", name, info.url)
        actual = _download(info.url, archive)
        if info.sha256 is None:
            logger.warning("%s has no known SHA-256; the download cannot be verified", name)
        elif actual != info.sha256:
            archive.unlink()
            raise DataError(
                f"{info.url}: SHA-256 mismatch (expected {info.sha256}, got {actual}); "
                "the download was deleted"
            )
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp / "extract")
        except zipfile.BadZipFile as exc:
            raise DataError(f"{info.url}: not a valid zip archive ({exc})") from None
        extracted = tmp / "extract" / info.directory
        if lacking := _missing(extracted, info):
            raise DataError(f"{info.url}: archive lacks {info.directory}/{', '.join(lacking)}")
        if folder.exists():
            # An incomplete folder blocks the rename; it is moved into the temp dir and
            # removed with it.
            logger.warning("replacing incomplete %s (missing %s)", folder, ", ".join(missing))
            shutil.move(folder, tmp / "previous")
        try:
            extracted.rename(folder)
        except OSError:
            # Another process may have finished the same download first.
            if _missing(folder, info):
                raise
    return folder
