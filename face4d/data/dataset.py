"""Building and reading the labelled 4D dataset: interchange-format shards plus a JSON manifest.

Layout of a dataset directory::

    manifest.json         config, seed, labels, splits, and one record per sequence
    shard_0000.npz ...    batches in the interchange format (``face4d.data.interchange``)

Two splits are recorded. The *identity* split (train/val/test) keeps every person in one part, for
the diffusion model and its classifiers. The *expression* split holds whole labels out, for
testing the mesh decoder on motions it never saw.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from face4d.data.interchange import LandmarkSequences, load_sequences, save_sequences
from face4d.data.labels import get_label
from face4d.data.synth import ExpressionSynthesizer, SynthConfig
from face4d.errors import Face4DError
from face4d.jsonfile import read_json, write_json
from meshops.atomic import atomic_dir
from meshops.head import HeadModel

FORMAT = "face4d-dataset"
FORMAT_VERSION = 1
DEFAULT_HELD_OUT_LABELS = ("mouth_extreme", "cheeks_in", "fear")
SPLITS = ("train", "val", "test")


def build_dataset(out: str | os.PathLike, sequences: int, seed: int = 0, config: SynthConfig | None = None,
                  shard_size: int = 500, held_out_labels: tuple[str, ...] = DEFAULT_HELD_OUT_LABELS,
                  head: HeadModel | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Generate ``sequences`` labelled sequences into the directory ``out``; nothing is left behind on failure."""
    if sequences <= 0:
        raise Face4DError(f"--sequences must be positive, got {sequences}")
    if shard_size <= 0:
        raise Face4DError(f"shard size must be positive, got {shard_size}")
    config = config or SynthConfig()
    for name in held_out_labels:
        get_label(name)
    if set(config.labels) <= set(held_out_labels):
        raise Face4DError("the expression split holds out every label; keep at least one for training")
    synth = ExpressionSynthesizer(head or HeadModel.load(), config, seed)
    id_splits = synth.identity_splits()
    split_of = {i: name for name, ids in id_splits.items() for i in ids}
    records, shards = [], []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        bar = tqdm(total=sequences, desc="building dataset", unit="seq", disable=not progress)
        for k, start in enumerate(range(0, sequences, shard_size)):
            stop = min(start + shard_size, sequences)
            batch, samples = synth.generate(range(start, stop))
            name = f"shard_{k:04d}.npz"
            save_sequences(tmp / name, batch)
            shards.append({"file": name, "count": stop - start})
            for row, (i, s) in enumerate(zip(range(start, stop), samples)):
                records.append({"index": i, "shard": k, "row": row, "label": s["label"], "type": s["type"],
                                "frames": int(batch.lengths[row]), "identity": s["identity"],
                                "split": split_of[s["identity"]], "intensity": round(s["intensity"], 4)})
            bar.update(stop - start)
        bar.close()
        manifest = {
            "format": FORMAT, "version": FORMAT_VERSION, "seed": seed, "config": config.to_dict(),
            "labels": list(config.labels), "shards": shards,
            "splits": {"identity": id_splits,
                       "expression": {"train_labels": [n for n in config.labels if n not in held_out_labels],
                                      "test_labels": [n for n in config.labels if n in held_out_labels]}},
            "sequences": records,
        }
        write_json(tmp / "manifest.json", manifest)
    return Path(out)


@dataclass
class Dataset:
    """A built dataset on disk: its manifest, and its sequences by split."""

    root: Path
    manifest: dict

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Dataset":
        root = Path(root)
        path = root / "manifest.json"
        if not path.is_file():
            raise Face4DError(f"{root}: not a face4d dataset (no manifest.json); build one with 'face4d dataset build'")
        manifest = read_json(path, "manifest")
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise Face4DError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        return cls(root, manifest)

    @property
    def config(self) -> SynthConfig:
        return SynthConfig.from_dict(self.manifest["config"])

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    def __len__(self) -> int:
        return len(self.manifest["sequences"])

    def records(self, split: str | None = None, labels: list[str] | None = None) -> list[dict]:
        """Manifest records of an identity split (``train``/``val``/``test``), optionally of some labels."""
        if split is not None and split not in SPLITS:
            raise Face4DError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [r for r in self.manifest["sequences"]
                if (split is None or r["split"] == split) and (labels is None or r["label"] in labels)]

    def sequences(self, split: str | None = None, labels: list[str] | None = None) -> LandmarkSequences:
        """The sequences of a split as one batch, in manifest order."""
        records = self.records(split, labels)
        if not records:
            raise Face4DError(f"{self.root}: no sequences in split {split!r} with labels {labels}")
        return self.gather(records)

    def gather(self, records: list[dict]) -> LandmarkSequences:
        """The sequences of manifest ``records`` as one batch, in the records' order, reading each shard once."""
        shards: dict[int, LandmarkSequences] = {}
        parts = []
        for k, run in itertools.groupby(records, key=lambda r: r["shard"]):
            if k not in shards:
                shards[k] = load_sequences(self.root / self.manifest["shards"][k]["file"])
            parts.append(shards[k].select(np.array([r["row"] for r in run])))
        return LandmarkSequences.concatenate(parts)

    def expression_split(self, part: str) -> LandmarkSequences:
        """All sequences whose label is in the expression split's ``train`` or ``test`` part."""
        if part not in ("train", "test"):
            raise Face4DError(f"unknown expression split part {part!r}; expected 'train' or 'test'")
        return self.sequences(labels=self.manifest["splits"]["expression"][f"{part}_labels"])
