"""Building and reading the labelled 4D dataset: interchange-format shards plus a JSON manifest.

Layout of a dataset directory::

    manifest.json         seed, config or source, labels, splits, and one record per sequence
    shard_0000.npz ...    batches in the interchange format (``face4d.data.interchange``)

A dataset is either generated (``build_dataset``: the manifest's ``config`` is the generator's
``SynthConfig``, the shards carry the blendshape weights) or imported from captures
(``import_dataset``: its ``source`` names the loader and its options, the shards hold landmarks
only). Both are written by ``write_dataset`` and read by ``Dataset``.

Two splits are recorded. The *identity* split (train/val/test) keeps every person in one part, for
the diffusion model and its classifiers; a record's ``identity`` is a generated person's index or a
captured subject's name. The *expression* split holds whole labels out, for testing the mesh
decoder on motions it never saw.
"""
from __future__ import annotations

import itertools
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from face4d.data.interchange import LandmarkSequences, load_sequences, save_sequences
from face4d.data.labels import LABEL_NAMES, get_label
from face4d.data.synth import ExpressionSynthesizer, SynthConfig, split_identities
from face4d.errors import Face4DError
from face4d.jsonfile import read_json, write_json
from meshops.atomic import atomic_dir
from meshops.head import HeadModel

FORMAT = "face4d-dataset"
FORMAT_VERSION = 1
DEFAULT_HELD_OUT_LABELS = ("mouth_extreme", "cheeks_in", "fear")
SPLITS = ("train", "val", "test")
IMPORT_VAL, IMPORT_TEST = 0.1, 0.1  # fractions of an imported dataset's subjects in val and test


def build_dataset(out: str | os.PathLike, sequences: int, seed: int = 0, config: SynthConfig | None = None,
                  shard_size: int = 500, held_out_labels: tuple[str, ...] = DEFAULT_HELD_OUT_LABELS,
                  head: HeadModel | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Generate ``sequences`` labelled sequences into the directory ``out``; nothing is left behind on failure."""
    if sequences <= 0:
        raise Face4DError(f"--sequences must be positive, got {sequences}")
    config = config or SynthConfig()
    _expression_split(config.labels, held_out_labels)
    synth = ExpressionSynthesizer(head or HeadModel.load(), config, seed)

    def shard(start: int, stop: int) -> tuple[LandmarkSequences, list[dict]]:
        batch, samples = synth.generate(range(start, stop))
        return batch, [{"identity": s["identity"], "intensity": round(s["intensity"], 4)} for s in samples]

    return write_dataset(out, sequences, shard, {"seed": seed, "config": config.to_dict()}, config.labels,
                         synth.identity_splits(), held_out_labels, shard_size=shard_size, overwrite=overwrite,
                         progress=progress)


def import_dataset(out: str | os.PathLike, seqs: LandmarkSequences, source: dict, seed: int = 0,
                   held_out_labels: tuple[str, ...] | None = None, val: float = IMPORT_VAL,
                   test: float = IMPORT_TEST, shard_size: int = 500, overwrite: bool = False,
                   progress: bool = True) -> Path:
    """Write captured sequences (``face4d.data.coma`` / ``bu4dfe`` loaders) as a dataset directory ``out``.

    The identity split is by subject (``seqs.subjects``): the subjects, sorted by name, are shuffled
    by ``seed`` and ``test`` / ``val`` of them (rounded, at least one each, 10% / 10% by default)
    go to the test / val parts, the rest (80%) to train; fewer than 3 subjects is an error. The
    labels are those present, in ``LABEL_NAMES`` order; the expression split holds out
    ``held_out_labels``, by default those of ``DEFAULT_HELD_OUT_LABELS`` present in the data (CoMA:
    ``mouth_extreme, cheeks_in``; BU-4DFE: ``fear``). ``source`` (the loader and its options) is
    stored in the manifest in place of a generator config.
    """
    if seqs.subjects is None or (seqs.subjects == "").any():
        raise Face4DError("every sequence needs its subject for the identity split; load the captures with "
                          "face4d.data.coma.load_coma or face4d.data.bu4dfe.load_bu4dfe")
    if (seqs.labels == "").any():
        raise Face4DError("every sequence needs a label to be part of a dataset")
    for name in set(seqs.labels):
        get_label(name)
    labels = [name for name in LABEL_NAMES if name in set(seqs.labels)]
    if held_out_labels is None:
        held_out_labels = tuple(name for name in DEFAULT_HELD_OUT_LABELS if name in labels)
    else:
        for name in held_out_labels:
            get_label(name)
        absent = [name for name in held_out_labels if name not in labels]
        if absent:
            raise Face4DError(f"held-out label(s) {', '.join(absent)} are not in the data "
                              f"(its labels: {', '.join(labels)})")
    _expression_split(labels, held_out_labels)
    splits = split_identities(sorted(set(seqs.subjects.tolist())), np.random.default_rng(seed), val, test,
                              what="subjects")

    def shard(start: int, stop: int) -> tuple[LandmarkSequences, list[dict]]:
        return seqs.select(slice(start, stop)), [{"identity": str(name)} for name in seqs.subjects[start:stop]]

    return write_dataset(out, len(seqs), shard, {"seed": seed, "source": source}, labels, splits, held_out_labels,
                         shard_size=shard_size, overwrite=overwrite, progress=progress)


def write_dataset(out: str | os.PathLike, sequences: int,
                  shard: Callable[[int, int], tuple[LandmarkSequences, list[dict]]], header: dict,
                  labels: Sequence[str], identity_splits: dict[str, list], held_out_labels: Sequence[str],
                  shard_size: int = 500, overwrite: bool = False, progress: bool = True) -> Path:
    """Write the dataset directory ``out``: shards and the manifest; nothing is left behind on failure.

    ``shard(start, stop)`` gives sequences ``start`` to ``stop - 1`` and one record each holding at
    least its ``identity`` (the person, as listed in ``identity_splits``); the index, shard, row,
    label, type, frames and split are added here. ``header`` holds ``seed`` and either ``config``
    (generated data) or ``source`` (imported data).
    """
    if shard_size <= 0:
        raise Face4DError(f"shard size must be positive, got {shard_size}")
    expression = _expression_split(labels, held_out_labels)
    split_of = {i: name for name, ids in identity_splits.items() for i in ids}
    records, shards = [], []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        bar = tqdm(total=sequences, desc="writing dataset", unit="seq", disable=not progress)
        for k, start in enumerate(range(0, sequences, shard_size)):
            batch, extra = shard(start, min(start + shard_size, sequences))
            name = f"shard_{k:04d}.npz"
            save_sequences(tmp / name, batch)
            shards.append({"file": name, "count": len(batch)})
            for row, record in enumerate(extra):
                records.append({"index": len(records), "shard": k, "row": row, "label": str(batch.labels[row]),
                                "type": str(batch.types[row]), "frames": int(batch.lengths[row]),
                                "identity": record["identity"], "split": split_of[record["identity"]],
                                **{key: value for key, value in record.items() if key != "identity"}})
            bar.update(len(batch))
        bar.close()
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, **header, "labels": list(labels), "shards": shards,
                    "splits": {"identity": identity_splits, "expression": expression}, "sequences": records}
        write_json(tmp / "manifest.json", manifest)
    return Path(out)


def _expression_split(labels: Sequence[str], held_out_labels: Sequence[str]) -> dict[str, list[str]]:
    """The expression split of ``labels``: the train labels and the held-out (test) ones."""
    for name in held_out_labels:
        get_label(name)
    if set(labels) <= set(held_out_labels):
        raise Face4DError("the expression split holds out every label; keep at least one for training")
    return {"train_labels": [n for n in labels if n not in held_out_labels],
            "test_labels": [n for n in labels if n in held_out_labels]}


def _check_manifest(m: dict, path: Path) -> None:
    """Refuse a manifest whose fields have the wrong types or whose counts disagree, naming the field,
    before anything trusts it (``dataset info``, ``train``)."""
    def fail(what: str) -> None:
        raise Face4DError(f"{path}: {what}")

    def is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def str_list(value) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    if not is_int(m.get("seed")):
        fail(f"'seed' must be an integer, got {m.get('seed')!r}")
    if not str_list(m.get("labels")):
        fail("'labels' must be a list of label names")
    shards = m.get("shards")
    if not isinstance(shards, list) or not all(isinstance(e, dict) and isinstance(e.get("file"), str)
                                               and "/" not in e["file"] and is_int(e.get("count"))
                                               and e["count"] >= 0 for e in shards):
        fail("'shards' must be a list of {'file': name, 'count': integer}")
    splits = m.get("splits")
    if not isinstance(splits, dict) or not isinstance(splits.get("identity"), dict) \
            or not all(isinstance(splits["identity"].get(name), list) for name in SPLITS):
        fail(f"'splits.identity' must map each of {', '.join(SPLITS)} to a list of identities")
    expression = splits.get("expression")
    if not isinstance(expression, dict) or not all(str_list(expression.get(k)) for k in ("train_labels", "test_labels")):
        fail("'splits.expression' must hold the lists 'train_labels' and 'test_labels'")
    records = m.get("sequences")
    if not isinstance(records, list):
        fail("'sequences' must be a list of records")
    fields = {"shard": is_int, "row": is_int, "frames": is_int, "label": lambda v: isinstance(v, str),
              "type": lambda v: isinstance(v, str), "split": lambda v: v in SPLITS}
    per_shard = [0] * len(shards)
    for i, record in enumerate(records):
        bad = [key for key, ok in fields.items() if not isinstance(record, dict) or not ok(record.get(key))]
        if bad:
            fail(f"sequence record {i}: bad or missing {', '.join(bad)} (split must be one of {', '.join(SPLITS)})")
        if not 0 <= record["shard"] < len(shards):
            fail(f"sequence record {i}: shard {record['shard']} is not one of the {len(shards)} listed")
        per_shard[record["shard"]] += 1
    for entry, count in zip(shards, per_shard):
        if count != entry["count"]:
            fail(f"shard {entry['file']} is listed with {entry['count']} sequence(s), but {count} record(s) point into it")
    for i, record in enumerate(records):
        if not 0 <= record["row"] < shards[record["shard"]]["count"]:
            fail(f"sequence record {i}: row {record['row']} is not in shard {shards[record['shard']]['file']}")


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
            raise Face4DError(f"{root}: not a face4d dataset (no manifest.json); make one with 'face4d dataset "
                              f"build' or 'face4d dataset import ... --out DIR'")
        manifest = read_json(path, "manifest")
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise Face4DError(f"{path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        if ("config" in manifest) == ("source" in manifest):
            raise Face4DError(f"{path}: a manifest needs either 'config' (generated data) or 'source' (imported)")
        _check_manifest(manifest, path)
        return cls(root, manifest)

    def check_shards(self) -> None:
        """Open every shard's header: each must exist, be a whole .npz archive and hold as many
        sequences as the manifest says (``face4d dataset info`` runs this; reading the data is not needed)."""
        for entry in self.manifest["shards"]:
            path = self.root / entry["file"]
            if not path.is_file():
                raise Face4DError(f"{self.root}: shard {entry['file']} is missing")
            try:
                with zipfile.ZipFile(path) as archive, archive.open("landmarks.npy") as member:
                    major, _ = np.lib.format.read_magic(member)
                    read_header = np.lib.format.read_array_header_1_0 if major == 1 else \
                        np.lib.format.read_array_header_2_0
                    shape = read_header(member)[0]
            except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
                raise Face4DError(f"{path}: truncated or corrupt shard ({type(exc).__name__}: {exc})") from None
            count = 1 if len(shape) == 3 else shape[0]
            if len(shape) not in (3, 4) or count != entry["count"]:
                raise Face4DError(f"{path}: holds landmarks of shape {shape}, but the manifest lists "
                                  f"{entry['count']} sequence(s) in it")

    @property
    def config(self) -> SynthConfig | None:
        """The generator's config of a built dataset; None for an imported one (see ``source``)."""
        return SynthConfig.from_dict(self.manifest["config"]) if "config" in self.manifest else None

    @property
    def source(self) -> dict | None:
        """Where an imported dataset came from (``format``, ``root``, the import options); None if generated."""
        return self.manifest.get("source")

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
