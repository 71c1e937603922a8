"""`biotok download`: fetch the public datasets the packaged sources files describe into a cache folder
laid out like `shared/data/real`, so `biotok prepare --sources shared_real --root <cache>` reads it.

    biotok download --datasets eegbci,mitdb --cache ~/biotok_data
    biotok download --datasets eegbci --subjects 1-14 --runs 1,2,4,8,12

- `eegbci` (EEGMMIDB, PhysioNet) goes through MNE's own fetcher, which checks every file against the
  SHA-256 checksums MNE ships; files land in `<cache>/eegbci/` (subjects 1-3, the shared_real sources)
  and `<cache>/eegbci-more/` (the others, the eegbci_more sources).
- `mitdb`, `ptbdb`, `grabmyo` (PhysioNet) and `myo-armband` (the dataset's GitHub repository, GPL-3.0)
  come from their published URLs, each file's size checked against the server's.
- Resumable: finished files are skipped; a file cut off mid-way is continued with an HTTP range request
  from `<file>.part`. Offline, the command ends with an error naming the URL it could not reach.
- `--mirror` replaces the PhysioNet root (`https://physionet.org/files`), e.g. for a local copy.
LibEMG's one-subject Myo recordings state no license, so they are not offered.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .config import run_command
from .errors import BiosignalError, ConfigError

PHYSIONET = "https://physionet.org/files"
MYO_REPO = "https://raw.githubusercontent.com/UlysseCoteAllard/MyoArmbandDataset/4de3efef85356fbf565d96a150f386d99165cfee"
CHUNK = 1 << 16


def _physionet_files(database: str, version: str, names: list[str]) -> list[tuple[str, str]]:
    return [(f"{{physionet}}/{database}/{version}/{name}", name.rsplit("/", 1)[-1]) for name in names]


def dataset_files(name: str) -> list[tuple[str, str]]:
    """(URL template, path under the dataset's folder) of every file of a URL-fetched dataset."""
    if name == "mitdb":
        return _physionet_files("mitdb", "1.0.0", [f"100.{ext}" for ext in ("hea", "dat", "atr")])
    if name == "ptbdb":
        return _physionet_files(
            "ptbdb", "1.0.0", [f"patient001/s0010_re.{ext}" for ext in ("hea", "dat", "xyz")]
        )
    if name == "grabmyo":
        records = [f"session1_participant1_gesture{g}_trial{t}" for g in (11, 12, 15, 16) for t in (1, 2, 3)]
        names = [f"Session1/session1_participant1/{r}.{ext}" for r in records for ext in ("hea", "dat")]
        return _physionet_files("grabmyo", "1.1.0", names)
    if name == "myo-armband":
        people = ("Female0", "Female1", "Male0", "Male1")
        paths = [f"PreTrainingDataset/{p}/training0/classe_{k}.dat" for p in people for k in range(28)]
        return [(f"{MYO_REPO}/{path}", path) for path in paths]
    raise ConfigError("datasets", f"unknown dataset {name!r}; known: {DATASETS}")


DATASETS = ("eegbci", "mitdb", "ptbdb", "grabmyo", "myo-armband")


def fetch(url: str, target: Path, timeout: float = 30.0) -> int:
    """Download `url` to `target`, continuing `<target>.part` where a run stopped; returns bytes fetched.

    The file appears under its name only once complete (size equal to the server's)."""
    if target.exists():
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the part file is already whole
            os.replace(part, target)
            return 0
        raise BiosignalError(url, "download", f"the server answered {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise BiosignalError(
            url,
            "download",
            f"cannot reach it ({getattr(err, 'reason', err)}): offline? Files already fetched are "
            "kept; run the same command again to resume",
        ) from None
    with response:
        resumed = response.status == 206
        total = response.headers.get("Content-Length")
        expected = (have if resumed else 0) + int(total) if total is not None else None
        fetched = 0
        with open(part, "ab" if resumed else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                fetched += len(chunk)
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise BiosignalError(url, "download", f"got {size} bytes of {expected}; run again to resume")
    os.replace(part, target)
    return fetched


def fetch_eegbci(cache: Path, subjects: list[int], runs: list[int], base_url: str) -> list[Path]:
    """EEGMMIDB runs through MNE's fetcher (checksums included), linked into the shared layout."""
    from mne.datasets import eegbci

    store = cache / "mne"
    placed = []
    for subject in subjects:
        try:
            paths = eegbci.load_data(subject, runs, path=store, update_path=False, base_url=base_url)
        except Exception as err:  # pooch raises requests' and its own errors
            raise BiosignalError(
                base_url,
                "download",
                f"EEGBCI subject {subject}: {err}. Files already fetched are kept; run again",
            ) from None
        folder = cache / ("eegbci" if subject <= 3 else "eegbci-more")
        folder.mkdir(parents=True, exist_ok=True)
        for path in map(Path, paths):
            link = folder / path.name
            if not link.exists():
                try:
                    os.link(path, link)
                except OSError:
                    link.write_bytes(path.read_bytes())
            placed.append(link)
    return placed


def parse_numbers(text: str) -> list[int]:
    """ "1-3,7" -> [1, 2, 3, 7]."""
    numbers = []
    for part in filter(None, text.replace(" ", "").split(",")):
        first, _, last = part.partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    return numbers


@dataclass
class DownloadArgs:
    """Fetch the public datasets the packaged sources describe (resumable, checksummed where published)."""

    datasets: str = field(
        default=",".join(DATASETS), metadata={"help": f"comma-separated, of {', '.join(DATASETS)}"}
    )
    cache: str = field(default="~/biotok_data", metadata={"help": "folder that receives the datasets"})
    subjects: str = field(default="1-3,7-14", metadata={"help": "EEGBCI subjects, e.g. 1-109"})
    runs: str = field(
        default="1,2,4,8,12", metadata={"help": "EEGBCI runs (1/2 eyes open/closed, 4/8/12 imagery)"}
    )
    mirror: str = field(default="", metadata={"help": f"a root to use instead of {PHYSIONET}"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def run(args: DownloadArgs) -> dict[str, int]:
    """Fetch every named dataset; returns the number of files in place per dataset."""
    from tqdm.auto import tqdm

    cache = Path(args.cache).expanduser()
    root = (args.mirror or PHYSIONET).rstrip("/")
    names = [n for n in args.datasets.split(",") if n]
    unknown = set(names) - set(DATASETS)
    if unknown:
        raise ConfigError("datasets", f"unknown {sorted(unknown)}; known: {', '.join(DATASETS)}")
    counts = {}
    for name in names:
        if name == "eegbci":
            subjects, runs = parse_numbers(args.subjects), parse_numbers(args.runs)
            with tqdm(total=len(subjects), desc="eegbci", unit="subject", disable=not args.progress) as bar:
                placed = []
                for subject in subjects:
                    placed += fetch_eegbci(cache, [subject], runs, f"{root}/eegmmidb/1.0.0/")
                    bar.update(1)
            counts[name] = len(placed)
            continue
        files = dataset_files(name)
        for template, relative in tqdm(files, desc=name, unit="file", disable=not args.progress):
            fetch(template.format(physionet=root), cache / name / relative)
        counts[name] = len(files)
    return counts


def main(argv: list[str] | None = None) -> int:
    def job(args: DownloadArgs) -> None:
        for name, n in run(args).items():
            print(f"{name}: {n} files in {Path(args.cache).expanduser() / name}")

    return run_command(DownloadArgs, job, argv, prog="biotok download")


if __name__ == "__main__":
    sys.exit(main())
