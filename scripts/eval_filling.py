"""Table 3 of the paper on our data: expression filling, scored by the independent classifier (IC).

Three settings (§5.3), with ``l`` drawn per test sequence: FFB keeps the first ``l`` frames and
FFE the last ``l``, ``l`` uniform in [10, 30]; FFM keeps the first ``l`` and the last ``l``, ``l``
uniform in [5, 15]. ``l`` is capped so that at least one frame is left to fill (``l <= L - 1``,
``2 l <= L - 1`` for FFM, ``L`` the length). Every test sequence is filled from its known frames
by (``face4d.eval.downstream.filling``):

* ours: expression filling (Alg. 3, ``LandmarkGenerator.fill``), unguided, one pass, with
  reconstruction guidance towards the known frames (its anchor term, ``--no-anchor`` to leave it out,
  and its gradient term of weight ``--reconstruction``, default 0; ``face4d.filling.KnownFrameReconstruction``);
* ours as the paper wrote Alg. 3 (replacement only), when the above has some;
* mean imputation (the paper's baseline): every unknown frame is the mean of the known frames.

Accuracy is the IC's w.r.t. the test sequence's label, FID on its features against the whole
test split; the ground-truth row is the test split's accuracy and the val split's FID. Also
reported: the largest relative error of the known frames in our fillings (must be < 1e-4).
Writes section ``table3`` of ``docs/results.md``.

    python scripts/eval_filling.py --data DATA --ic IC_DIR [--model BUNDLE] [--limit N] [--reconstruction W]
"""
from __future__ import annotations

from face4d.eval.downstream import FILL_SETTINGS, filling
from face4d.eval.harness import (Evaluation, add_reconstruction_argument, jitter_check, run_script,
                                 sampling_from_args, timing_note)
from face4d.eval.report import markdown_table
from face4d.generate import LandmarkGenerator

KNOWN_ERROR_LIMIT = 1e-4


def evaluate(args) -> tuple[list[str], list]:
    generator = LandmarkGenerator.from_pretrained(args.model)
    sampling, sampler = sampling_from_args(args, generator.diffusion.num_timesteps)
    evaluation = Evaluation.load(args.data, args.ic, args.limit, args.seed)
    table = filling(evaluation, generator, sampling, batch_size=args.batch_size)
    truth, errors = evaluation.ground_truth(), table.values["known error"]["ours"]
    ours = {name: table.scores["ours", name] for name in errors}
    mean = {name: table.scores["mean imputation", name] for name in errors}
    checks = [
        (f"FFM accuracy >= ground truth - 5 points: {100 * ours['FFM'].accuracy:.1f} vs "
         f"{100 * truth.accuracy - 5:.1f}", ours["FFM"].accuracy >= truth.accuracy - 0.05),
        ("FID of ours below mean imputation in every setting: " +
         ", ".join(f"{name} {ours[name].fid:.2f} vs {mean[name].fid:.2f}" for name in ours),
         all(ours[name].fid < mean[name].fid for name in ours)),
        (f"known frames kept, max relative error < {KNOWN_ERROR_LIMIT:.0e}: " +
         ", ".join(f"{name} {error:.1e}" for name, error in errors.items()),
         max(errors.values()) < KNOWN_ERROR_LIMIT),
        *(jitter_check(ours[name], truth, f"ours, {name}") for name in ours),
    ]
    drawn = ", ".join(f"{s.name} {s.low}-{s.high} (mean {table.values['l'][s.name].mean():.1f})"
                      for s in FILL_SETTINGS)
    return [
        f"{evaluation.description()} Every test sequence is filled from its known frames: FFB keeps the first "
        "l frames, FFE the last l, FFM the first l and the last l; l is drawn per sequence, uniform in "
        "[10, 30] for FFB and FFE and in [5, 15] for FFM as in the paper, and capped so that a frame is left "
        "to fill (l <= length - 1; 2 l <= length - 1 for FFM). Ours: expression filling (Alg. 3), unguided, "
        f"one pass, {sampler}, with reconstruction guidance of weight {sampling.reconstruction:g} towards the "
        "known frames (0: none) and, when that weight is above 0, also as the paper wrote Alg. 3 (known frames "
        "re-imposed by replacement only); the targets are checked on the first. Mean imputation: every unknown frame is the mean of the known frames (per "
        "landmark coordinate). Accuracy is w.r.t. the test sequence's label; the ground truth is the same for "
        f"every setting. {timing_note(args.threads)}{evaluation.subset_note()}",
        markdown_table(table.headers, table.rows),
        f"Known frames l drawn: {drawn}. Largest relative error of the known frames in our fillings (largest "
        "absolute difference over their coordinates / largest absolute coordinate): "
        + ", ".join(f"{name} {error:.1e}" for name, error in errors.items()) + ".",
    ], checks


def main(argv: list[str] | None = None) -> None:
    run_script("eval_filling.py", __doc__, "table3", "Table 3: expression filling", evaluate, argv,
               arguments=add_reconstruction_argument)


if __name__ == "__main__":
    main()
