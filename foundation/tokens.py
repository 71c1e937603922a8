"""Token corpora: a frozen tokenizer's codes for every window of a prepared corpus, stored with HF
`datasets` (flat integer arrays, memory-mapped, one shard per source shard), tagged with the
tokenizer's config hash so that codes of another tokenizer are never mixed in by accident.

    biotok tokenize --tokenizer pretrained_models/tokenizer-small --corpora corpora/real --out tokens/real
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data_prep.atomic import atomic_path, write_json
from data_prep.corpus import Corpus, load_corpora
from data_prep.errors import BiosignalError, ConfigError
from data_prep.mixing import collate_windows

TOKENS_FORMAT = "biotok-tokens-1"


def token_features(codebook_size: int):
    from datasets import Features, Sequence, Value

    return Features(
        {
            # flat (n_channels * n_patches * n_scales * n_levels): the fastest Arrow layout
            "codes": Sequence(Value("int16" if codebook_size <= 2**15 else "int32")),
            "n_channels": Value("int32"),
            "n_patches": Value("int32"),
            "ch_names": Sequence(Value("string")),
            "modality": Value("string"),
            "subject": Value("string"),
            "session": Value("string"),
            "source": Value("string"),
            "label": Value("string"),
            "window_start": Value("float64"),
            "window_index": Value("int64"),  # the row of the source corpus (its signal, for raw-patch input)
        }
    )


class TokenCorpus(Corpus):
    """A tokenized corpus. `corpus[i]["codes"]` is `(n_channels, n_patches, n_scales, n_levels)` int64.

    `tokenizer_hash` names the tokenizer that made the codes; pass `expect_hash` to refuse others."""

    FORMAT = TOKENS_FORMAT
    ARRAY_COLUMN = "codes"
    MADE_BY = "biotok tokenize"

    def __init__(self, path: str | Path, expect_hash: str | None = None):
        super().__init__(path)
        if expect_hash is not None and self.tokenizer_hash != expect_hash:
            raise BiosignalError(
                self.path / "corpus.json",
                "tokenizer_hash",
                f"codes were made by tokenizer {self.tokenizer_hash}, expected {expect_hash}: "
                "re-run `biotok tokenize` with this model's tokenizer",
            )

    def features(self):
        return token_features(self.info["codebook_size"])

    @property
    def tokenizer_hash(self) -> str:
        return self.info["tokenizer_hash"]

    @property
    def code_shape(self) -> tuple[int, int]:
        return self.info["n_scales"], self.info["n_levels"]

    def source_corpus(self) -> Corpus:
        """The prepared corpus these codes were made from (for raw-patch input)."""
        return Corpus(self.info["source_corpus"])

    def __getitem__(self, index: int) -> dict:
        row = self._numpy[int(index)]
        s, q = self.code_shape
        row["codes"] = np.asarray(row["codes"], np.int64).reshape(
            int(row["n_channels"]), int(row["n_patches"]), s, q
        )
        row["ch_names"] = list(row["ch_names"])
        return row


def collate_tokens(items: list[dict], corpus: str = "") -> dict:
    """Stack token windows of one length; pad channels to the batch's largest montage.

    Returns codes `(batch, channels, patches, scales, levels)` (0 where padded), channel_mask
    `(batch, channels)`, and per-item lists of channel names, labels, subjects, window indices."""
    shapes = {it["codes"].shape[1:] for it in items}
    if len(shapes) != 1:
        raise ConfigError("batch", f"token windows of different shapes {sorted(shapes)} cannot share a batch")
    max_channels = max(it["codes"].shape[0] for it in items)
    codes = torch.zeros(len(items), max_channels, *shapes.pop(), dtype=torch.long)
    mask = torch.zeros(len(items), max_channels, dtype=torch.bool)
    for i, it in enumerate(items):
        c = it["codes"].shape[0]
        codes[i, :c] = torch.from_numpy(it["codes"])
        mask[i, :c] = True
    return {
        "codes": codes,
        "channel_mask": mask,
        "ch_names": [it["ch_names"] for it in items],
        "modality": items[0]["modality"],
        "label": [it["label"] for it in items],
        "subject": [it["subject"] for it in items],
        "window_index": [int(it["window_index"]) for it in items],
        "corpus": corpus,
    }


@torch.no_grad()
def tokenize_corpus(
    tokenizer,
    corpus: Corpus,
    out: str | Path,
    batch_size: int = 64,
    progress: bool = True,
    windows: Sequence[int] | None = None,
    known_codes: Mapping[int, np.ndarray] | None = None,
) -> tuple[Path, int, int]:
    """Write the codes of every window of `corpus` (or of the `windows` indices only; each keeps its
    `window_index`) to `out/<corpus name>`; returns (folder, shards written, shards reused). A shard is
    reused when its source shard, the tokenizer and the windows chosen from it are unchanged.
    `known_codes`: window index -> codes `(n_channels, P, S, Q)` this tokenizer already made (e.g. while
    measuring its reconstruction), written as they are instead of encoded again."""
    from datasets.arrow_writer import ArrowWriter
    from tqdm.auto import tqdm

    key = corpus.preset.name
    if key not in tokenizer.config.modalities:
        raise ConfigError(
            "tokenizer",
            f"corpus {corpus.name} uses preset {key!r}; the tokenizer has {tokenizer.modality_names}",
        )
    from data_prep.presets import get_preset

    if get_preset(tokenizer.config.modalities[key]["preset"]).fingerprint() != corpus.preset.fingerprint():
        raise BiosignalError(
            corpus.path / "corpus.json",
            "preset",
            f"prepared with preset {corpus.preset.to_dict()}, but the tokenizer was trained on "
            f"{tokenizer.config.modalities[key]['preset']}: re-prepare the corpus with the tokenizer's preset",
        )
    tokenizer_hash = tokenizer.config.config_hash()
    cfg = tokenizer.config
    folder = Path(out) / corpus.name
    folder.mkdir(parents=True, exist_ok=True)
    feats = token_features(cfg.codebook_size)
    shards, written, reused, offset = [], 0, 0, 0
    patch_len = corpus.preset.patch_len
    wanted = None if windows is None else set(windows)
    total = len(corpus) if wanted is None else len(wanted)
    bar = tqdm(total=total, desc=f"tokenize {corpus.name}", unit="window", disable=not progress)
    for index, source in enumerate(corpus.info["shards"]):
        rows = range(offset, offset + source["n_windows"])
        offset += source["n_windows"]
        key_text = f"{source['file']}:{tokenizer_hash}"
        if wanted is not None:
            rows = [i for i in rows if i in wanted]
            if not rows:
                continue
            key_text += ":" + ",".join(map(str, rows))
        digest = hashlib.sha256(key_text.encode()).hexdigest()[:12]
        shard = folder / f"shard-{index:05d}-{digest}.arrow"
        if shard.exists():
            shards.append({"file": shard.name, "n_windows": len(rows), "source": source["file"]})
            reused += 1
            bar.update(len(rows))
            continue
        with atomic_path(shard) as tmp:
            writer = ArrowWriter(features=feats, path=str(tmp))
            for first in range(0, len(rows), batch_size):
                chosen = rows[first : first + batch_size]
                items = [corpus[i] for i in chosen]
                codes = {i: known_codes[i] for i in chosen if known_codes is not None and i in known_codes}
                todo = [(i, it) for i, it in zip(chosen, items) if i not in codes]
                if todo:
                    batch = collate_windows([it for _, it in todo])
                    b, c, t = batch["signal"].shape
                    patches = batch["signal"].view(b, c, t // patch_len, patch_len).to(tokenizer.device)
                    ids = tokenizer.channel_ids(batch["ch_names"], key)
                    made = tokenizer.encode_patches(patches, ids, key).cpu().numpy()
                    codes |= {i: made[j, : it["signal"].shape[0]] for j, (i, it) in enumerate(todo)}
                for i, it in zip(chosen, items):
                    n_channels = it["signal"].shape[0]
                    writer.write(
                        {
                            "codes": codes[i].reshape(-1),
                            "n_channels": n_channels,
                            "n_patches": codes[i].shape[1],
                            "ch_names": it["ch_names"],
                            "modality": key,
                            "subject": it["subject"],
                            "session": it["session"],
                            "source": it["source"],
                            "label": it["label"],
                            "window_start": float(it["window_start"]),
                            "window_index": i,
                        }
                    )
                bar.update(len(items))
            writer.finalize()
            writer.close()
        shards.append({"file": shard.name, "n_windows": len(rows), "source": source["file"]})
        written += 1
    bar.close()
    keep = {s["file"] for s in shards}
    for stale in folder.glob("shard-*.arrow"):
        if stale.name not in keep:
            stale.unlink()
    write_json(
        folder / "corpus.json",
        {
            "format": TOKENS_FORMAT,
            "name": corpus.name,
            "preset": corpus.preset.to_dict(),
            "source_corpus": str(corpus.path.resolve()),
            "tokenizer_hash": tokenizer_hash,
            "tokenizer_config": cfg.to_dict(),
            "n_scales": cfg.n_scales,
            "n_levels": cfg.n_levels,
            "codebook_size": cfg.codebook_size,
            "channel_vocab_size": len(cfg.channel_vocab),
            "n_windows": offset,
            "shards": shards,
        },
    )
    return folder, written, reused


def load_token_corpora(paths, expect_hash: str | None = None) -> dict[str, TokenCorpus]:
    """Token corpora by folder (a folder of several loads them all); all must share one tokenizer."""
    corpora = load_corpora(paths, TokenCorpus, expect_hash=expect_hash)
    hashes = {c.tokenizer_hash for c in corpora.values()}
    if len(hashes) > 1:
        raise ConfigError("tokens", f"token corpora of different tokenizers {sorted(hashes)} cannot be mixed")
    return corpora


@dataclass
class TokenizeArgs:
    """Run a trained tokenizer over prepared corpora and store the codes."""

    tokenizer: str = field(metadata={"help": "trained tokenizer folder (config.json + model.safetensors)"})
    corpora: list[str] = field(
        default_factory=lambda: ["biotok_out/corpora"],
        metadata={"help": "prepared corpus folders (or folders of corpora) to tokenize"},
    )
    out: str = field(
        default="biotok_out/tokens", metadata={"help": "folder that receives one token corpus per corpus"}
    )
    batch_size: int = field(default=64, metadata={"help": "windows per encode batch"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:1 ..."})
    progress: bool = True


def run(args: TokenizeArgs) -> None:
    from tokenizer.model import BiotokTokenizer

    if not (Path(args.tokenizer) / "config.json").exists():
        raise BiosignalError(args.tokenizer, "config.json", "not a trained tokenizer folder")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tokenizer = BiotokTokenizer.from_pretrained(args.tokenizer).to(device).eval()
    for corpus in load_corpora(args.corpora).values():
        folder, written, reused = tokenize_corpus(tokenizer, corpus, args.out, args.batch_size, args.progress)
        print(f"{corpus.name}: {len(corpus)} windows ({written} shards written, {reused} reused) -> {folder}")


def main(argv: list[str] | None = None) -> int:
    from data_prep.config import run_command

    return run_command(TokenizeArgs, run, argv, prog="biotok tokenize")


if __name__ == "__main__":
    sys.exit(main())
