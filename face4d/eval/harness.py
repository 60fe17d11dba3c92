"""What the results scripts (``scripts/eval_*.py``, Tables 1-4) share.

Every row of those tables is "a set of sequences scored against the test split": the accuracy of
the independent classifier (IC) w.r.t. the labels the sequences were asked for, and the FID
between the IC features of the set and of the *whole* test split. ``Evaluation`` holds what that
needs: the dataset's splits, the seeded ``--limit`` subset of the test split that the generated
rows are made for (one sequence per subset sequence, ``face4d.eval.protocol.generate_like``), the
IC with the test split's features (computed once), and the ground-truth row (accuracy on the test
split; FID of the val split against it, since FID(test, test) is 0 by definition).

The rest is the scripts' common command-line options, their PASS/FAIL targets, and the report
section (``face4d.eval.report``) that states the exact command that made it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from face4d.checkpoint import load_pretrained
from face4d.commands.options import add_reconstruction_arg, add_sampling_args, sampling_config
from face4d.data.dataset import Dataset
from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError
from face4d.eval.metrics import accuracy, classify, frechet_distance
from face4d.eval.motion import landmark_stats
from face4d.eval.report import update_section
from face4d.filling import RECONSTRUCTION_WEIGHT
from face4d.generate import SamplingConfig
from face4d.models.ic import IndependentClassifier

GROUND_TRUTH = "ground truth (test; FID: val vs test)"


def add_common_arguments(parser: argparse.ArgumentParser, sampler: bool = True) -> None:
    """``--data --ic --model --steps --limit --seed --batch-size --out --threads``, and ``--sampler``
    when ``sampler`` (a script that runs one sampler; Table 1 runs both)."""
    parser.add_argument("--data", required=True, type=Path, help="the dataset the models were trained on")
    parser.add_argument("--ic", required=True, type=Path, help="independent classifier ('face4d train ic'), trained "
                                                               "on a dataset of another seed than --data")
    add_sampling_args(parser, guidance=False, sampler=sampler, runtime=False)
    parser.add_argument("--limit", type=int, help="generate for a random subset of this many test sequences "
                                                  "(FID still against the whole test split; the ground-truth "
                                                  "row then uses as many val sequences)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128, help="sequences generated per batch")
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the targets are for 2 cores)")


def command_line(script: str, argv: Sequence[str]) -> str:
    """The command that reproduces a run: ``python scripts/<script> <argv...>``, shell-quoted."""
    return f"python scripts/{script} " + shlex.join(list(argv))


SCORE_HEADERS = ("Accuracy (%)", "FID", "Jitter (cm/frame^2)", "Amplitude (cm)")
"""The columns of ``Scores.cells``: a table cannot pass on trembling or under-acting output, which the
IC and its FID barely see (``face4d.eval.motion``)."""


@dataclass
class Scores:
    """One row's scores: IC accuracy (0-1), FID, how many sequences, the seconds they took, and
    the sequences' mean jitter (cm/frame^2) and apex amplitude (cm) (``face4d.eval.motion``)."""

    accuracy: float
    fid: float
    count: int
    seconds: float | None = None
    jitter: float = float("nan")
    amplitude: float = float("nan")

    def cells(self) -> list[str]:
        """``[accuracy in %, FID, jitter, amplitude]`` as table cells (``SCORE_HEADERS``)."""
        return [f"{100 * self.accuracy:.1f}", f"{self.fid:.2f}", f"{self.jitter:.4f}", f"{self.amplitude:.3f}"]

    @property
    def per_sequence(self) -> str:
        """Seconds per sequence as a table cell ("" when not timed)."""
        return "" if self.seconds is None else f"{self.seconds / self.count:.3f}"

    def summary(self) -> str:
        return (f"n={self.count:4d} accuracy {100 * self.accuracy:5.1f}%  FID {self.fid:7.2f}  "
                f"jitter {self.jitter:.4f}  amplitude {self.amplitude:.3f}")


@dataclass
class ResultTable:
    """A script's table: ``headers`` and ``rows`` (cells), the ``scores`` behind them by
    ``(method, setting)``, and ``values``: any other number a script reports or checks."""

    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    scores: dict[tuple[str, str], Scores] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def column(self, header: str) -> list[Any]:
        index = self.headers.index(header)
        return [row[index] for row in self.rows]


class Evaluation:
    """The splits, the ``--limit`` subset, the IC and the test split's IC features.

    ``reference`` is the test split, or with ``limit`` a seeded random subset of that many test
    sequences (in split order); ``val`` is then cut to as many sequences, for the ground-truth FID.
    ``rng`` (seeded by ``seed``) has drawn those subsets and is left for the script's own draws.
    """

    def __init__(self, test: LandmarkSequences, val: LandmarkSequences, train: LandmarkSequences,
                 ic: IndependentClassifier, limit: int | None = None, seed: int = 0, name: str = "",
                 ic_name: str = "") -> None:
        self.test, self.val, self.train, self.ic = test, val, train, ic
        self.seed, self.name, self.ic_name = seed, name, ic_name
        self.rng = np.random.default_rng(seed)
        self.reference = test
        if limit is not None and limit < len(test):
            self.reference = test.select(np.sort(self.rng.choice(len(test), limit, replace=False)))
            self.val = val.select(np.sort(self.rng.choice(len(val), min(limit, len(val)), replace=False)))
        self.test_pred, self.test_features = classify(ic, test)
        self._ground_truth: Scores | None = None

    @classmethod
    def load(cls, data: str | os.PathLike, ic: str | os.PathLike, limit: int | None = None,
             seed: int = 0) -> "Evaluation":
        """From a dataset directory and an IC directory ('face4d train ic')."""
        dataset = Dataset.load(data)
        splits = [dataset.sequences(split) for split in ("test", "val", "train")]
        model, _, _ = load_pretrained(ic, "ic")
        return cls(*splits, model, limit=limit, seed=seed, name=Path(data).name, ic_name=Path(ic).name)

    def score(self, seqs: LandmarkSequences, seconds: float | None = None) -> Scores:
        """Accuracy of the IC w.r.t. ``seqs.labels`` and FID of ``seqs`` against the test split."""
        pred, features = classify(self.ic, seqs)
        motion = landmark_stats(seqs)
        return Scores(accuracy(pred, seqs.labels), frechet_distance(features, self.test_features), len(seqs), seconds,
                      motion.mean("jitter"), motion.mean("apex_amplitude"))

    def ground_truth(self) -> Scores:
        """The IC's accuracy on the whole test split, the FID of ``val`` against it, and the test
        split's jitter and amplitude; ``count`` is the number of val sequences."""
        if self._ground_truth is None:
            _, val_features = classify(self.ic, self.val)
            motion = landmark_stats(self.test)
            self._ground_truth = Scores(accuracy(self.test_pred, self.test.labels),
                                        frechet_distance(val_features, self.test_features), len(self.val),
                                        jitter=motion.mean("jitter"), amplitude=motion.mean("apex_amplitude"))
        return self._ground_truth

    def timed(self, make: Callable[[], LandmarkSequences]) -> tuple[LandmarkSequences, Scores]:
        """The sequences ``make()`` returns, and their scores with the seconds ``make`` took."""
        start = time.perf_counter()
        seqs = make()
        return seqs, self.score(seqs, time.perf_counter() - start)

    def description(self) -> str:
        """The sentence that says what every row is scored against."""
        return (f"Scored against the test split ({len(self.test)} sequences) of `{self.name}` by the independent "
                f"classifier `{self.ic_name}` (one LSTM layer + a linear layer, trained on the train split of a dataset "
                "built from another seed than the models' training data, so that no model was tuned against it). "
                "Jitter: mean |x_{f+1} - 2 x_f + x_{f-1}| over frames and landmarks; amplitude: the largest mean "
                "landmark displacement from the neutral frame (either end when the order is free); both means over "
                "sequences (`face4d.eval.motion`; the ground-truth row gives the test split's).")

    def subset_note(self) -> str:
        """What a ``--limit`` run changed (empty without one), to append to the description."""
        if self.reference is self.test:
            return ""
        return (f" Generated rows made one sequence for each of a random subset of {len(self.reference)} test "
                f"sequences, and the ground-truth FID used {len(self.val)} val sequences: FID grows as sets "
                "shrink, so compare rows of equal size.")


Check = tuple[str, bool]

JITTER_RATIO_LIMIT = 2.0
"""A table's own check that its rows do not tremble: jitter at most this times the ground truth's."""


def jitter_check(ours: Scores, truth: Scores, name: str = "ours") -> Check:
    """``ours``' jitter at most ``JITTER_RATIO_LIMIT`` times the ground truth's."""
    ratio = ours.jitter / truth.jitter
    return (f"jitter of {name} <= {JITTER_RATIO_LIMIT:g} x ground truth: {ours.jitter:.4f} vs {truth.jitter:.4f} "
            f"({ratio:.2f}x)", ratio <= JITTER_RATIO_LIMIT)
Run = Callable[[argparse.Namespace], tuple[list[str], list[Check]]]


def add_reconstruction_argument(parser: argparse.ArgumentParser) -> None:
    """``--reconstruction``, for the scripts that condition on known frames (Tables 3 and 4); the
    tables also report the paper's algorithm as written (replacement only)."""
    add_reconstruction_arg(parser, default=RECONSTRUCTION_WEIGHT)


def sampling_from_args(args: argparse.Namespace, num_timesteps: int) -> tuple[SamplingConfig, str]:
    """The ``SamplingConfig`` of ``--sampler``/``--steps`` (and ``--reconstruction`` where the script
    has it), and how to name the sampler in a report."""
    sampling = sampling_config(args)
    name = f"fast sampler ({args.steps} steps)" if args.sampler == "fast" else f"paper sampler ({num_timesteps} steps)"
    return sampling, name


def timing_note(threads: int) -> str:
    return f"Time: wall-clock seconds per sequence, batched, with {threads} torch threads on this machine."


def run_script(script: str, doc: str, key: str, title: str, run: Run, argv: Sequence[str] | None = None,
               arguments: Callable[[argparse.ArgumentParser], None] | None = None, common: bool = True,
               section: Callable[[argparse.Namespace], tuple[str, str]] | None = None) -> None:
    """The ``main`` of a results script: parse the common options (``add_common_arguments`` when
    ``common``, else only ``--threads`` and ``--out``; plus ``arguments``'), set the torch threads,
    ``run(args)`` -> (the section's blocks, its targets), print both, and write section ``key`` of
    ``--out`` with the command line, titled ``title`` (``section(args)`` gives both instead, for a
    script whose options choose the section). A ``Face4DError`` exits with its message on one line."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if common:
        add_common_arguments(parser)
    else:
        parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
        parser.add_argument("--threads", type=int, default=2, help="torch threads")
    if arguments is not None:
        arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        blocks, checks = run(args)
    except Face4DError as exc:
        sys.exit(f"error: {exc}")
    print("\n\n".join(block.strip("\n") for block in blocks))
    print_checks(checks)
    if section is not None:
        key, title = section(args)
    write_report(args.out, key, title, command_line(script, argv), blocks, checks)
    print(f"wrote {args.out}")


def print_checks(checks: Sequence[Check]) -> None:
    for text, ok in checks:
        print(("PASS " if ok else "FAIL ") + text)


def write_report(out: str | os.PathLike, key: str, title: str, command: str, blocks: Sequence[str],
                 checks: Sequence[Check] = ()) -> Path:
    """Section ``key`` of ``out``: ``## title``, the command, the ``blocks`` (paragraphs, tables)
    separated by blank lines, then the targets as a list of pass/FAIL lines."""
    parts = [f"## {title}", f"Command: `{command}`", *(block.strip("\n") for block in blocks)]
    if checks:
        parts += ["Targets:", "\n".join(f"- {'pass' if ok else 'FAIL'}: {text}" for text, ok in checks)]
    return update_section(out, key, "\n\n".join(parts))
