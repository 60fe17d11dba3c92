"""Tables 2-4 of the paper on our data: text control, expression filling, geometry-adaptive generation.

Each function scores one table (``scripts/eval_text_control.py``, ``eval_filling.py``,
``eval_geometry.py`` write them into ``docs/results.md``) and returns a ``ResultTable``: its rows
and the numbers behind them. As in Table 1, every generated set has one sequence per sequence of
``evaluation.reference`` (the test split or its ``--limit`` subset), with that sequence's length
and whatever the task conditions on (its text, its known frames, its neutral face and label), and
is scored against the whole test split (``face4d.eval.harness.Evaluation``).

The IC is order-insensitive (type I): it scores the label only. The paper scores the enriched-text
task and Table 4 with an order-sensitive (type S) IC; here those accuracies are label accuracies,
and whether the order (N2E/E2N) was respected is not scored.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError
from face4d.eval.baselines import NearestText, mean_imputation
from face4d.eval.harness import GROUND_TRUTH, SCORE_HEADERS, Evaluation, ResultTable
from face4d.eval.metrics import join_speeds, known_frame_error
from face4d.eval.protocol import generate_like
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.text import TextEncoder, get_text_encoder

# ------------------------------------------------------------------------ Table 2: text control

TEXT_TASKS = {"raw": "texts", "enriched": "texts_enriched"}
"""The two text tasks of §5.2 and the ``LandmarkSequences`` field that holds each one's texts."""
RETRIEVAL = {"random": "nearest-text retrieval (random among equally near)",
             "first": "nearest-text retrieval (first of equally near)"}


def require_text_guide(generator: LandmarkGenerator) -> None:
    """A ``Face4DError`` that says so when the generator's bundle has no text guide."""
    if generator.text_guide is None:
        raise Face4DError("the model bundle has no text guide (text_guide/), which text control needs: train one "
                          "with 'face4d train text-guide' and put it in the bundle")


def text_control(evaluation: Evaluation, generator: LandmarkGenerator, sampling: SamplingConfig,
                 encoder: TextEncoder | None = None, batch_size: int = 128, progress: bool = True) -> ResultTable:
    """Table 2: for the raw and the enriched text of every reference sequence, one text-guided
    sample (Alg. 2, the bundle's text guide) and one nearest-text retrieval from the training
    split per tie rule (``NearestText``, with the guide's text encoder unless ``encoder`` is
    given), each scored for accuracy w.r.t. the reference's label and FID; plus the ground truth.

    ``scores`` keys: ``("ours" | "retrieval, random" | "retrieval, first", "raw" | "enriched")``.
    """
    require_text_guide(generator)
    reference = evaluation.reference
    for task, name in TEXT_TASKS.items():
        texts = getattr(reference, name)
        if texts is None or any(not str(text).strip() for text in texts):
            raise Face4DError(f"every test sequence needs a {task} text ({name}); rebuild the dataset")
    encoder = encoder or get_text_encoder(generator.text_guide.config.text_encoder)
    table = ResultTable(["Method", "Sequences", *[f"{cell}, {task} texts" for task in TEXT_TASKS
                                                  for cell in SCORE_HEADERS], "s / sequence"])
    truth = evaluation.ground_truth()
    table.rows.append([GROUND_TRUTH, truth.count, *truth.cells(), *truth.cells(), ""])
    for task, name in TEXT_TASKS.items():
        texts = getattr(reference, name)
        _, table.scores["ours", task] = evaluation.timed(lambda: generate_like(
            reference, lambda idx, frames, seed: generator.generate(text=list(texts[idx]), frames=frames, seed=seed,
                                                                    sampling=sampling),
            seed=evaluation.seed, batch_size=batch_size, progress=progress, desc=f"ours, {task} texts"))
        for ties in RETRIEVAL:
            retrieval = NearestText(evaluation.train, getattr(evaluation.train, name), encoder, ties)
            _, table.scores[f"retrieval, {ties}", task] = evaluation.timed(lambda: generate_like(
                reference, lambda idx, frames, seed: retrieval.sample(texts[idx], frames, seed),
                seed=evaluation.seed, progress=False))
    for key, method in [("ours", "ours (text guide)")] + [(f"retrieval, {t}", m) for t, m in RETRIEVAL.items()]:
        raw, enriched = table.scores[key, "raw"], table.scores[key, "enriched"]
        seconds = (raw.seconds + enriched.seconds) / (raw.count + enriched.count)
        table.rows.append([method, raw.count, *raw.cells(), *enriched.cells(), f"{seconds:.3f}"])
    return table


# ------------------------------------------------------------------- Table 3: expression filling

@dataclass(frozen=True)
class FillSetting:
    """Where the known frames of a filling experiment are: the first ``l`` (``"first"``), the last
    ``l`` (``"last"``) or both (``"both"``), ``l`` uniform in ``[low, high]`` (integers)."""

    name: str
    known: str
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.known not in ("first", "last", "both") or not 1 <= self.low <= self.high:
            raise Face4DError(f"bad filling setting {self}: known must be first, last or both, and 1 <= low <= high")

    def masks(self, lengths: np.ndarray, rng: np.random.Generator,
              frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(known (N, frames) bool, l (N,))`` for sequences of ``lengths``; ``frames`` defaults to
        the longest. ``l`` is drawn per sequence, then capped so that one frame stays unknown:
        ``l <= L - 1`` (``L`` the length), or ``2 l <= L - 1`` when both ends are known."""
        lengths = np.asarray(lengths, np.int64)
        frames = int(lengths.max()) if frames is None else frames
        ends = 2 if self.known == "both" else 1
        if (lengths < ends + 1).any():
            raise Face4DError(f"{self.name} needs sequences of at least {ends + 1} frames")
        drawn = rng.integers(self.low, self.high + 1, len(lengths))
        l = np.minimum(drawn, (lengths - 1) // ends)
        index = np.arange(frames)[None]
        first = index < l[:, None]
        last = (index >= (lengths - l)[:, None]) & (index < lengths[:, None])
        known = {"first": first, "last": last, "both": first | last}[self.known]
        return known, l


FILL_SETTINGS = (FillSetting("FFB", "first", 10, 30), FillSetting("FFE", "last", 10, 30),
                 FillSetting("FFM", "both", 5, 15))
"""§5.3: ``l`` in [10, 30] for FFB and FFE, in [5, 15] at each end for FFM. FFB ("filling from the
beginning") keeps the first ``l`` frames and FFE the last ``l``: the paper does not say which end is
known for these two (its Table 3 caption speaks of "locations of the missing part", which would
read the other way round), so the two rows would only swap names."""


def _variants(sampling: SamplingConfig) -> dict[str, SamplingConfig]:
    """Ours with ``sampling`` (key ``"ours"``) and, when it uses reconstruction guidance, the
    paper's algorithm as written, replacement only (key ``"ours, replacement only"``)."""
    variants = {"ours": sampling}
    if sampling.reconstruction > 0 or sampling.anchor:
        variants["ours, replacement only"] = replace(sampling, reconstruction=0.0, anchor=False)
    return variants


def _method_name(key: str, algorithm: str, sampling: SamplingConfig) -> str:
    if key == "ours, replacement only":
        return f"ours ({algorithm} as written: replacement only)"
    terms = (["anchor"] if sampling.anchor else []) + \
        ([f"gradient w = {sampling.reconstruction:g}"] if sampling.reconstruction > 0 else [])
    return f"ours ({algorithm} + reconstruction guidance: {', '.join(terms)})" if terms else f"ours ({algorithm})"


def filling(evaluation: Evaluation, generator: LandmarkGenerator, sampling: SamplingConfig,
            settings: tuple[FillSetting, ...] = FILL_SETTINGS, batch_size: int = 128,
            progress: bool = True) -> ResultTable:
    """Table 3: every reference sequence, with the known frames of each setting, filled by the
    model (Alg. 3, one unguided pass; with ``sampling``'s reconstruction guidance, and then also
    without it, as the paper wrote it) and by ``mean_imputation``, scored for accuracy w.r.t. the
    reference's label and FID; plus the ground truth and, for ours, the known frames' largest
    relative error (``known_frame_error``). Setting ``k``'s masks are drawn with the seed
    ``(evaluation.seed, k)``, so they do not depend on the other settings.

    ``scores`` keys: ``(method, setting name)``, method ``"ours"``, ``"ours, replacement only"``
    (when ``sampling`` has reconstruction guidance) or ``"mean imputation"``; ``values``: ``known
    error`` (per method of ours, per setting name: the largest error) and ``l`` (per setting name:
    the drawn ``l`` of each reference sequence).
    """
    reference = evaluation.reference
    names = [setting.name for setting in settings]
    variants = _variants(sampling)
    table = ResultTable(["Method", "Sequences", *[f"{cell}, {n}" for n in names for cell in SCORE_HEADERS],
                         "Known frames, max rel. error", "s / sequence"])
    table.values.update({"known error": {key: {} for key in variants}, "l": {}})
    for k, setting in enumerate(settings):
        known, l = setting.masks(reference.lengths, np.random.default_rng((evaluation.seed, k)), reference.num_frames)
        table.values["l"][setting.name] = l
        for key, config in variants.items():
            def fill(idx: np.ndarray, frames: int, seed: int, known=known, config=config) -> LandmarkSequences:
                return generator.fill(reference.select(idx), known[idx, :frames], seed=seed, sampling=config)

            filled, table.scores[key, setting.name] = evaluation.timed(lambda: generate_like(
                reference, fill, seed=evaluation.seed, batch_size=batch_size, progress=progress,
                desc=f"{key}, {setting.name}"))
            table.values["known error"][key][setting.name] = known_frame_error(filled, reference, known)
        _, table.scores["mean imputation", setting.name] = evaluation.timed(lambda: mean_imputation(reference, known))
    truth = evaluation.ground_truth()
    table.rows.append([GROUND_TRUTH, truth.count, *truth.cells() * len(settings), "", ""])
    for method in ("mean imputation", *reversed(variants)):
        scores = [table.scores[method, name] for name in names]
        if method == "mean imputation":
            name, error = method, "0 (kept)"
        else:
            name = _method_name(method, "Alg. 3", variants[method])
            error = f"{max(table.values['known error'][method].values()):.1e}"
        seconds = sum(s.seconds for s in scores) / sum(s.count for s in scores)
        table.rows.append([name, scores[0].count, *[cell for s in scores for cell in s.cells()], error,
                           f"{seconds:.3f}"])
    return table


# -------------------------------------------------------- Table 4: geometry-adaptive generation

def geometry_adaptive(evaluation: Evaluation, generator: LandmarkGenerator, sampling: SamplingConfig,
                      passes: int = 5, batch_size: int = 128, progress: bool = True) -> ResultTable:
    """Table 4: for every reference sequence, geometry-adaptive generation (Alg. 4, ``passes``
    harmonising passes) from its own neutral frame (its first for N2E, its last for E2N), guided
    by the type S classifier towards its label in its order; with ``sampling``'s reconstruction
    guidance and, when it has some, also without (the paper's Alg. 4 as written). Scored for
    accuracy and FID, with the join report for ours and for the reference sequences themselves:

    * the largest absolute error of the enforced frame (cm; should be ~0);
    * the mean speed (cm/frame, ``join_speeds``) between the neutral frame and its neighbour, and
      the mean speed between the other consecutive frames: a join that jumps shows as a join
      speed well above the speed elsewhere.

    ``scores`` keys: ``("ours" | "ours, replacement only", "geometry")``; ``values``: ``enforced
    error`` (cm, per method of ours), and ``join`` and ``elsewhere`` (per method or ``"ground
    truth"``: the (N,) speeds).
    """
    if "S" not in generator.classifiers:
        raise Face4DError("the model bundle has no type S classifier (classifier_S/), which geometry-adaptive "
                          "generation with a label needs")
    reference = evaluation.reference
    neutral_index = reference.neutral_frames(strict=True)
    neutrals = reference.landmarks[np.arange(len(reference)), neutral_index]
    variants = _variants(sampling)
    table = ResultTable(["Method", "Sequences", *SCORE_HEADERS, "Enforced frame, max abs error (cm)",
                         "Speed at the join (cm/frame)", "Speed elsewhere (cm/frame)", "Join / elsewhere",
                         "s / sequence"])
    truth = evaluation.ground_truth()
    rows = [("ground truth", GROUND_TRUTH, truth, reference, "")]
    for key, config in reversed(list(variants.items())):
        def sample(idx: np.ndarray, frames: int, seed: int, config=config) -> LandmarkSequences:
            return generator.from_neutrals(neutrals[idx], frames, list(reference.types[idx]),
                                            list(reference.labels[idx]), seed, passes, config)

        seqs, scores = evaluation.timed(lambda: generate_like(reference, sample, seed=evaluation.seed,
                                                              batch_size=batch_size, progress=progress, desc=key))
        table.scores[key, "geometry"] = scores
        enforced = float(np.abs(seqs.landmarks[np.arange(len(seqs)), neutral_index] - neutrals).max())
        table.values.setdefault("enforced error", {})[key] = enforced
        rows.append((key, f"{_method_name(key, 'Alg. 4', config)}, {passes} passes", scores, seqs, f"{enforced:.1e}"))
    for key, name, scores, sequences, error in rows:
        join, elsewhere = join_speeds(sequences)
        table.values.setdefault("join", {})[key] = join
        table.values.setdefault("elsewhere", {})[key] = elsewhere
        table.rows.append([name, scores.count, *scores.cells(), error, f"{join.mean():.4f}", f"{elsewhere.mean():.4f}",
                           f"{join.mean() / elsewhere.mean():.2f}", scores.per_sequence])
    return table
