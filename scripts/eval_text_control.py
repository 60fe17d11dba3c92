"""Table 2 of the paper on our data: text control, scored by the independent classifier (IC).

For the raw texts ("high smile") and for the enriched texts ("from a neutral face to a high
smile") of the test sequences, each method makes one sequence per test sequence with its text and
length; accuracy is the IC's w.r.t. the test sequence's label, FID is on the IC's features
against the whole test split (``face4d.eval.downstream.text_control``). Rows:

* ground truth: the test split (accuracy); its FID compares the val split with the test split;
* ours: text-guided sampling (Alg. 2) with the bundle's text guide (``text_guide/``);
* nearest-text retrieval: the training sequence whose text embedding (the guide's text encoder)
  is nearest by cosine, cut or padded (last frame held) to the length; many training sequences
  share a text, so two rows: one of the equally near drawn at random, or always the first.

The IC is order-insensitive (type I), so the enriched task's accuracy is a label accuracy (the
paper uses an order-sensitive IC there). Writes section ``table2`` of ``docs/results.md``.

    python scripts/eval_text_control.py --data DATA --ic IC_DIR [--model BUNDLE] [--limit N]
"""
from __future__ import annotations

from face4d.eval.downstream import require_text_guide, text_control
from face4d.eval.harness import Evaluation, jitter_check, run_script, sampling_from_args, timing_note
from face4d.eval.report import markdown_table
from face4d.generate import LandmarkGenerator


def evaluate(args) -> tuple[list[str], list]:
    generator = LandmarkGenerator.from_pretrained(args.model)
    require_text_guide(generator)
    sampling, sampler = sampling_from_args(args, generator.diffusion.num_timesteps)
    evaluation = Evaluation.load(args.data, args.ic, args.limit, args.seed)
    table = text_control(evaluation, generator, sampling, batch_size=args.batch_size)
    return [
        f"{evaluation.description()} Every method makes one sequence per test sequence with its text (raw: "
        "`text`, enriched: `text_enriched`) and length; accuracy is w.r.t. the test sequence's label. Ours: "
        f"text-guided sampling with the bundle's text guide ({generator.text_guide.config.text_encoder} text "
        f"encoder), {sampler}. Retrieval: the training sequence with the nearest text (cosine in the same "
        "encoder's space), cut or padded (last frame held) to the length; training sequences share texts, so "
        "either one of the equally near at random, or always the first. The IC is order-insensitive, so the "
        "enriched task is scored on the label only (the paper uses an order-sensitive IC there). "
        f"{timing_note(args.threads)}{evaluation.subset_note()}",
        markdown_table(table.headers, table.rows),
    ], [jitter_check(table.scores["ours", task], evaluation.ground_truth(), f"ours, {task} texts")
        for task in ("raw", "enriched")]


def main(argv: list[str] | None = None) -> None:
    run_script("eval_text_control.py", __doc__, "table2", "Table 2: text control", evaluate, argv)


if __name__ == "__main__":
    main()
