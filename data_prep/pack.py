"""`biotok pack` / `biotok unpack`: prepared corpora as one compact file, to move them between machines.

A prepared corpus stores float32 windows; moving it to a machine with a transfer limit (a lent GPU
takes 64 MiB a call) needs far fewer bytes. `pack` quantises each channel-window to integers with a
step set by that row's own RMS, so the quantisation noise sits `snr_db` below the row's power (40 dB:
1% of the amplitude, far under what any tokenizer or classifier here resolves), codes the first
difference along time (smooth, band-limited signals give small numbers), and compresses with LZMA. The
other columns travel exactly, as JSON. `unpack` rebuilds a corpus that `load_corpora` reads.

    biotok pack --corpora corpora/real --out real.biotok-pack --snr_db 40
    biotok unpack --pack real.biotok-pack --out corpora/real

Measured on the EEGBCI corpora (64 ch, 200 Hz, 4 s windows), see docs/DATA.md.
"""

from __future__ import annotations

import io
import json
import lzma
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .config import run_command
from .corpus import CORPUS_FORMAT, Corpus, features, load_corpora
from .errors import BiosignalError, ConfigError

PACK_FORMAT = 1
_ARRAYS = ("signal", "ch_pos", "scale_center", "scale_spread")


def quantise(signal: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """`(C, T)` float -> (first differences `(C, T)` int32, step per channel `(C,)` float32)."""
    rms = np.sqrt((signal.astype(np.float64) ** 2).mean(axis=-1))
    # uniform quantiser noise is step^2 / 12: put it snr_db below each row's power
    step = np.where(rms > 0, rms * np.sqrt(12.0) * 10 ** (-snr_db / 20), 1.0).astype(np.float32)
    levels = np.round(signal / step[:, None]).astype(np.int64)
    return np.diff(levels, axis=-1, prepend=0).astype(np.int32), step


def dequantise(deltas: np.ndarray, step: np.ndarray) -> np.ndarray:
    return (np.cumsum(deltas.astype(np.int64), axis=-1) * step[:, None].astype(np.float64)).astype(np.float32)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack_corpora(
    corpora: dict[str, Corpus], out: str | Path, snr_db: float = 40.0, progress: bool = True
) -> dict:
    """Write `corpora` into one pack file; returns {corpus: (windows, bytes before, bytes packed)}."""
    from tqdm.auto import tqdm

    if not 10 <= snr_db <= 120:
        raise ConfigError("snr_db", f"expected 10-120 dB, got {snr_db}")
    sizes = {}
    with atomic_path(out) as tmp, tarfile.open(tmp, "w") as tar:
        _add(tar, "pack.json", json.dumps({"format": PACK_FORMAT, "snr_db": snr_db}).encode())
        for name, corpus in corpora.items():
            deltas, steps, rows, raw = [], [], [], 0
            for row in tqdm(corpus, desc=f"pack {name}", total=len(corpus), disable=not progress):
                delta, step = quantise(row["signal"], snr_db)
                raw += row["signal"].nbytes
                deltas.append(delta.reshape(-1))
                steps.append(step)
                meta = {k: v for k, v in row.items() if k not in _ARRAYS}
                meta["events"] = json.dumps(meta["events"])
                meta.update({k: np.asarray(row[k]).reshape(-1).tolist() for k in _ARRAYS[1:]})
                rows.append(json.dumps(meta))
            flat = np.concatenate(deltas) if deltas else np.zeros(0, np.int32)
            wide = flat.size and (flat.min() < -32768 or flat.max() > 32767)
            signal = lzma.compress(flat.astype(np.int32 if wide else np.int16).tobytes(), preset=6)
            header = {"dtype": "int32" if wide else "int16", "info": corpus.info, "n_windows": len(rows)}
            _add(tar, f"{name}/header.json", json.dumps(header).encode())
            _add(tar, f"{name}/rows.jsonl.xz", lzma.compress("\n".join(rows).encode(), preset=6))
            _add(
                tar,
                f"{name}/steps.f32.xz",
                lzma.compress(np.concatenate(steps or [[]]).astype(np.float32).tobytes()),
            )
            _add(tar, f"{name}/signal.xz", signal)
            sizes[name] = (len(rows), raw, len(signal))
    return sizes


def unpack_corpora(pack: str | Path, out: str | Path, progress: bool = True) -> list[Path]:
    """Rebuild every corpus of a pack under `out/<name>`; returns their folders."""
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    pack = Path(pack)
    try:
        tar = tarfile.open(pack, "r")
    except (tarfile.TarError, OSError) as err:
        raise BiosignalError(pack, "file", f"not a readable biotok pack ({err})") from err
    with tar:
        try:
            names = tar.getnames()
        except (tarfile.TarError, EOFError) as err:
            raise BiosignalError(pack, "file", f"truncated or corrupt pack ({err})") from err

        def read(member: str) -> bytes:
            if member not in names:
                raise BiosignalError(pack, member, "missing from the pack (truncated or not a biotok pack?)")
            try:
                data = tar.extractfile(member).read()
                return lzma.decompress(data) if member.endswith(".xz") else data
            except (tarfile.TarError, EOFError, lzma.LZMAError) as err:
                raise BiosignalError(pack, member, f"truncated or corrupt ({err})") from err

        head = json.loads(read("pack.json"))
        if head.get("format") != PACK_FORMAT:
            raise BiosignalError(
                pack, "pack.json", f"expected pack format {PACK_FORMAT}, got {head.get('format')}"
            )
        folders = []
        for name in sorted({n.split("/")[0] for n in names if "/" in n}):
            header = json.loads(read(f"{name}/header.json"))
            rows = read(f"{name}/rows.jsonl.xz").decode().split("\n")
            rows = [json.loads(r) for r in rows if r]
            steps = np.frombuffer(read(f"{name}/steps.f32.xz"), np.float32)
            flat = np.frombuffer(read(f"{name}/signal.xz"), np.dtype(header["dtype"]))
            expected = sum(r["n_channels"] * r["n_times"] for r in rows)
            if flat.size != expected or steps.size != sum(r["n_channels"] for r in rows):
                raise BiosignalError(pack, f"{name}/signal.xz", f"{flat.size} samples, expected {expected}")
            folder = Path(out) / name
            folder.mkdir(parents=True, exist_ok=True)
            shard = folder / "shard-00000-unpacked.arrow"
            sample = channel = 0
            with atomic_path(shard) as tmp:
                writer = ArrowWriter(features=features(), path=str(tmp))
                for row in tqdm(rows, desc=f"unpack {name}", disable=not progress):
                    c, t = row["n_channels"], row["n_times"]
                    deltas = flat[sample : sample + c * t].reshape(c, t)
                    row["signal"] = dequantise(deltas, steps[channel : channel + c]).reshape(-1)
                    sample, channel = sample + c * t, channel + c
                    writer.write(row)
                writer.finalize()
                writer.close()
            shard_info = {"file": shard.name, "n_windows": len(rows), "files": [], "skipped": []}
            write_json(shard.with_suffix(".json"), shard_info)
            info = {
                **header["info"],
                "format": CORPUS_FORMAT,
                "shards": [shard_info],
                "packed_snr_db": head["snr_db"],
            }
            write_json(folder / "corpus.json", info)
            folders.append(folder)
    return folders


@dataclass
class PackArgs:
    """Pack prepared corpora into one compact file."""

    corpora: list[str] = field(
        default_factory=list, metadata={"help": "corpus folders (or folders of corpora)"}
    )
    out: str = field(default="corpora.biotok-pack", metadata={"help": "the pack file to write"})
    snr_db: float = field(
        default=40.0, metadata={"help": "quantisation noise this far below each row's power"}
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


@dataclass
class UnpackArgs:
    """Rebuild corpora from a pack file."""

    pack: str = field(default="corpora.biotok-pack", metadata={"help": "the pack file to read"})
    out: str = field(default="corpora", metadata={"help": "folder that receives one folder per corpus"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})


def main_pack(argv: list[str] | None = None) -> int:
    def job(args: PackArgs) -> None:
        if not args.corpora:
            raise ConfigError("corpora", "name at least one prepared corpus folder")
        sizes = pack_corpora(load_corpora(args.corpora), args.out, args.snr_db, args.progress)
        for name, (n, raw, packed) in sizes.items():
            print(f"{name}: {n} windows, {raw / 2**20:.1f} MiB float32 -> {packed / 2**20:.1f} MiB")
        print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB)")

    return run_command(PackArgs, job, argv, prog="biotok pack")


def main_unpack(argv: list[str] | None = None) -> int:
    def job(args: UnpackArgs) -> None:
        for folder in unpack_corpora(args.pack, args.out, args.progress):
            print(f"unpacked {folder}")

    return run_command(UnpackArgs, job, argv, prog="biotok unpack")


if __name__ == "__main__":  # python -m data_prep.pack: pack; unpack is `biotok unpack`
    sys.exit(main_pack())
