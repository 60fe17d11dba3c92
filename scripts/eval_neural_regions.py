"""Local expression editing (eye/mouth crops, ``render.neural.local_expression_*``) on the unseen (test)
identities of a portrait dataset.

    python scripts/eval_neural_regions.py --data /work/data/portraits64 --evaluators models/neural/evaluators \
        --model ema=face4d/weights/neural/region --model raw=runs/region/raw --out docs/results.md

Each edit takes a test image (source) and a target label other than its own, and re-draws both regions
with that label's first region texts (``face4d.data.region_texts``: the eyes' text for the eye crop, the
mouth's for the mouth crop) at the paper's default strength t_i = 250 of 500. Writes the section
``neural_regions`` of ``docs/results.md``:

* **expression accuracy** of our expression classifier (``render.neural.evaluators``; 18 labels) on
  the edits against the target labels, beside the unedited sources' accuracy on the same targets (the
  target of issue 18: +30 points), at each ``--guidance`` scale, and the ceiling of re-drawing only the
  boxes (the true expression pasted into them, on datasets built with ``--sources``);
* **identity**: cosine of our identity encoder between the edit and the person's neutral image, over
  the same cosine for the unedited source (the target: at least 0.8), and the cosine to the source;
* **per-region Fréchet distance** in our evaluators' feature space (not FID; the evaluators were
  trained on whole faces, so these crop features are a feature space, not a calibrated one) between
  the edited crops and the real crops of all test images, beside the unedited sources' crops;
* **seam score** (``local_expression_regions.seam_score``: RMS gradient, in 0..255 levels, of edit
  minus source in a band across the box border) of the feathered paste against a hard paste of the
  same crops;
* **strength trade-off** (paper Fig. 4): identity kept and expression reached over t_i, as a table
  and as the figure ``--figure``;
* **cost** of one edit (both regions, ``--steps`` denoising steps) on ``--threads`` CPU threads.

``--grid`` also draws an edit grid (texts x strengths, one test identity) for docs/neural.md.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from face4d.data.region_texts import REGION_TEXTS, embed
from face4d.eval.report import markdown_table, update_section
from render.neural import metrics
from render.neural.data import load_images, load_neutrals, read_manifest, to_tensor, to_uint8
from render.neural.evaluators import Evaluators
from render.neural.local_expression_model import DEFAULT_STRENGTH, RegionDiffusion
from render.neural.local_expression_regions import MARGINS, boxes, crop, paste, paste_mask, seam_score
from render.neural.precision import resolve

SECTION = "neural_regions"
GRID_ROWS = (("mouth", "happiness"), ("mouth", "mouth_open"), ("mouth", "bareteeth"), ("eyes", "surprise"),
             ("eyes", "anger"), ("both", "surprise"))
"""(region, label) rows of the edit grid, each drawn with the label's first region texts (stored
embeddings, so the grid needs no sentence encoder)."""


def named(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(path)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def pick_edits(test: dict, count: int, labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Source rows of the test images and a target label (not the source's) for each."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(test["rgb"]), min(count, len(test["rgb"])), replace=False))
    targets = (np.maximum(test["label"][rows], 0) + rng.integers(1, labels, len(rows))) % labels
    return rows, targets


def label_texts(labels: list[str]) -> dict[str, torch.Tensor]:
    """(labels, dim) embeddings of each label's first text, per region."""
    return {r: embed([REGION_TEXTS[label][r][0] for label in labels]) for r in ("eyes", "mouth")}


def run_edits(model: RegionDiffusion, test: dict, rows, targets, texts, strength: int, steps: int, seed: int,
              guidance: float = 1.0, batch: int = 32) -> tuple[np.ndarray, dict]:
    """The edited images (uint8) and, per region, (source crops, edited crops, boxes), all on the CPU."""
    images, parts = [], {"eyes": [], "mouth": []}
    for i in range(0, len(rows), batch):
        r, t = rows[i:i + batch], targets[i:i + batch]
        out, crops = model.edit(test["rgb"][r], test["landmarks"][r], ("eyes", "mouth"),
                                {k: v[t] for k, v in texts.items()}, strength=strength, steps=steps,
                                guidance=guidance, seed=seed + i, return_crops=True)
        images.append(to_uint8(out))
        for region, value in crops.items():
            parts[region].append([v.cpu() for v in value])
    return np.concatenate(images), {k: [torch.cat(x) for x in zip(*v)] for k, v in parts.items()}


def crop_features(ev: Evaluators, crops: torch.Tensor) -> np.ndarray:
    return metrics.features(ev, to_uint8(crops))


def real_crop_features(model: RegionDiffusion, ev: Evaluators, rgb: np.ndarray, marks: np.ndarray) -> dict:
    """Our evaluators' features of the unedited eye and mouth crops of images."""
    images, marks = to_tensor(rgb), torch.as_tensor(np.asarray(marks))
    return {r: crop_features(ev, crop(images, model.boxes(marks, r), model.config.size)) for r in ("eyes", "mouth")}


def identity_scores(ev, edited, sources, neutral_images) -> tuple[float, float, float]:
    kept = metrics.identity_cosine(ev, edited, neutral_images)
    base = metrics.identity_cosine(ev, sources, neutral_images)
    return kept, kept / base, metrics.identity_cosine(ev, edited, sources)


def box_ceiling(ev: Evaluators, test: dict, count: int) -> tuple[int, float, float, float] | None:
    """What re-drawing only the boxes can reach: test images whose source (``--sources``: the same person,
    camera and light with another expression) exists, their own pixels inside the source's eye and mouth
    boxes pasted into the source. Returns (images, accuracy of that paste, of the whole image, of the
    source) against the image's label, or None for a dataset without sources."""
    if "source_rgb" not in test:
        return None
    rows = np.where((test["label"] >= 0) & (test["source_label"] != test["label"]))[0][:count]
    marks = torch.as_tensor(test["source_landmarks"][rows]).float()
    inside = torch.zeros(len(rows), 1, *test["rgb"].shape[1:3])
    for region in ("eyes", "mouth"):
        inside = torch.maximum(inside, paste_mask(boxes(marks, region, MARGINS[region]), inside.shape[-2:], 0))
    inside = inside.permute(0, 2, 3, 1).numpy()
    target, source, labels = test["rgb"][rows], test["source_rgb"][rows], test["label"][rows]
    pasted = (inside * target + (1 - inside) * source).round().astype(np.uint8)
    return (len(rows), metrics.label_accuracy(ev, pasted, labels), metrics.label_accuracy(ev, target, labels),
            metrics.label_accuracy(ev, source, labels))


def seams(test: dict, rows: np.ndarray, parts: dict, feather: float) -> dict[str, tuple[float, float]]:
    """Per region: mean seam score of the hard and of the feathered paste of the same edited crops."""
    source = to_tensor(test["rgb"][rows])
    out = {}
    for region, (_, edited, box) in parts.items():
        out[region] = tuple(seam_score(paste(source, edited, box, f), source, box).mean().item()
                            for f in (0.0, feather))
    return out


def seconds_per_edit(model: RegionDiffusion, test: dict, texts: dict, steps: int, guidance: float,
                     threads: int) -> float:
    torch.set_num_threads(threads)
    one = {k: v[:1] for k, v in texts.items()}
    model.edit(test["rgb"][0], test["landmarks"][0], ("eyes", "mouth"), one, steps=2)  # warm-up
    start = time.perf_counter()
    model.edit(test["rgb"][0], test["landmarks"][0], ("eyes", "mouth"), one, steps=steps,
               guidance=guidance).cpu()  # .cpu(): waits
    return time.perf_counter() - start


def plot_curve(path: Path, curves: dict[str, list[tuple[int, float, float]]], source_accuracy: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, points in curves.items():
        t, kept, reached = zip(*points)
        ax.plot(t, kept, "o-", label=f"{name}: identity kept (cosine ratio)")
        ax.plot(t, reached, "s--", label=f"{name}: expression reached (accuracy)")
    ax.axhline(source_accuracy, color="grey", lw=0.8, ls=":", label="unedited sources' accuracy")
    ax.axvline(DEFAULT_STRENGTH, color="grey", lw=0.8)
    ax.set_xlabel("noise step t_i (of 500)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title("Local expression editing: strength trade-off (paper Fig. 4)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_grid(path: Path, model: RegionDiffusion, image: np.ndarray, marks: np.ndarray, strengths, steps: int,
              guidance: float) -> None:
    """Rows: ``GRID_ROWS``; columns: the source, then the edit at each strength; 3x enlarged."""
    import imageio.v3 as iio

    rows = []
    for region, label in GRID_ROWS:
        regions = ("eyes", "mouth") if region == "both" else (region,)
        texts = {r: embed([REGION_TEXTS[label][r][0]])[0] for r in regions}
        cells = [image] + [to_uint8(model.edit(image, marks, regions, texts, strength=s, steps=steps,
                                                guidance=guidance))[0]
                           for s in strengths]
        rows.append(np.concatenate(cells, axis=1))
    grid = np.concatenate(rows, axis=0)
    iio.imwrite(path, grid.repeat(3, 0).repeat(3, 1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--evaluators", required=True, type=Path)
    parser.add_argument("--model", type=named, action="append", required=True, help="NAME=DIR, repeatable")
    parser.add_argument("--edits", type=int, default=300, help="edits scored at the default strength")
    parser.add_argument("--curve-edits", type=int, default=96, help="edits per point of the strength curve")
    parser.add_argument("--strengths", type=ints, default=(50, 100, 150, 200, 250, 300, 400, 500))
    parser.add_argument("--steps", type=int, default=25, help="denoising steps from t_i")
    parser.add_argument("--guidance", type=floats, default=(1.0,),
                        help="classifier-free guidance scales of the main table, e.g. 1,3 (1: none, the paper's "
                             "sampling); the first is also that of the other tables")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda); the cost row is "
                                                        "measured there too")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--figure", type=Path, default=Path("docs/neural_regions_strength.png"))
    parser.add_argument("--grid", type=Path, help="also draw the edit grid (e.g. docs/neural_regions_grid.png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.data)
    labels = manifest["labels"]
    test, neutrals = load_images(args.data, "test"), load_neutrals(args.data)
    ev = Evaluators.from_pretrained(args.evaluators, args.device)
    texts = label_texts(labels)
    rows, targets = pick_edits(test, args.edits, len(labels), args.seed)
    neutral_row = {int(i): r for r, i in enumerate(neutrals["identity"])}
    neutral_images = neutrals["rgb"][[neutral_row[int(i)] for i in test["identity"][rows]]]
    sources = test["rgb"][rows]
    source_accuracy = metrics.label_accuracy(ev, sources, targets)
    main_rows = [["unedited source", "-", "-", f"{source_accuracy:.3f}", "-", "1.000", "1.000"]]
    guidance = args.guidance[0]
    fd_rows, seam_rows, cost_rows, curves = [], [], [], {}
    real = None
    for name, directory in args.model:
        model = RegionDiffusion.from_pretrained(directory, args.device)
        if real is None:
            real = real_crop_features(model, ev, test["rgb"], test["landmarks"])
            unedited = real_crop_features(model, ev, sources, test["landmarks"][rows])
            fd_rows.append(["unedited source crops (real)"] + [
                f"{metrics.frechet_distance(unedited[r], real[r]):.3f}" for r in ("eyes", "mouth")])
        scored = {}
        for scale in reversed(args.guidance):  # the first one last: its crops feed the tables below
            edited, parts = run_edits(model, test, rows, targets, texts, DEFAULT_STRENGTH, args.steps, args.seed,
                                      scale)
            kept, ratio, to_source = identity_scores(ev, edited, sources, neutral_images)
            accuracy = metrics.label_accuracy(ev, edited, targets)
            scored[scale] = [name, DEFAULT_STRENGTH, f"{scale:g}",
                             f"{accuracy:.3f} ({100 * (accuracy - source_accuracy):+.1f} pts)",
                             f"{kept:.3f}", f"{ratio:.3f}", f"{to_source:.3f}"]
        main_rows += [scored[scale] for scale in args.guidance]
        fd_rows.append([name] + [f"{metrics.frechet_distance(crop_features(ev, parts[r][1]), real[r]):.3f}"
                                 for r in ("eyes", "mouth")])
        seam = seams(test, rows, parts, model.config.feather)
        seam_rows.append([name] + [f"{seam[r][0]:.2f} / {seam[r][1]:.2f}" for r in ("eyes", "mouth")])
        k = min(args.curve_edits, len(rows))
        base = metrics.identity_cosine(ev, sources[:k], neutral_images[:k])
        curves[name] = []
        for strength in args.strengths:
            images, _ = run_edits(model, test, rows[:k], targets[:k], texts, strength, args.steps, args.seed,
                                  guidance)
            curves[name].append((strength, metrics.identity_cosine(ev, images, neutral_images[:k]) / base,
                                 metrics.label_accuracy(ev, images, targets[:k])))
        cost_rows.append([name, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}",
                          f"{seconds_per_edit(model, test, texts, args.steps, guidance, args.threads):.2f}"])
        torch.set_num_threads(args.threads)
        if args.grid is not None and name == args.model[0][0]:
            identity = int(np.unique(test["identity"])[0])
            draw_grid(args.grid, model, neutrals["rgb"][neutral_row[identity]],
                      neutrals["landmarks"][neutral_row[identity]], (100, 250, 400), args.steps, guidance)
    k = min(args.curve_edits, len(rows))
    plot_curve(args.figure, curves, metrics.label_accuracy(ev, sources[:k], targets[:k]))
    curve_rows = [[name, t, f"{kept:.3f}", f"{reached:.3f}"] for name, points in curves.items()
                  for t, kept, reached in points]
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    n_ids = len(np.unique(test["identity"][rows]))
    where = args.device if args.device != "cpu" else f"{args.threads} CPU thread{'s' * (args.threads > 1)}"
    ceiling = box_ceiling(ev, test, args.edits)
    ceiling_text = "" if ceiling is None else (
        f"\nWhat re-drawing only the boxes can reach: for {ceiling[0]} test images with a source (the same person, "
        "camera and light with another expression), the image's own pixels inside the source's eye and mouth "
        f"boxes, pasted into the source, are classified as the image's label {ceiling[1]:.3f} of the time "
        f"(the whole image: {ceiling[2]:.3f}, the source: {ceiling[3]:.3f}).\n")
    text = (f"## Local expression editing: eye and mouth regions on unseen identities ({manifest['size']}², "
            f"{len(rows)} edits of {n_ids} test identities)\n\n`{command}`\n\n"
            "Each edit: a test image, a target label other than its own, both regions re-drawn with the label's "
            f"region texts at t_i = {DEFAULT_STRENGTH} of 500, {args.steps} denoising steps, feathered paste, "
            f"UNet in {resolve(args.device)} (precision auto).\n\n"
            + markdown_table(["model", "t_i", "guidance", "expression accuracy (18 labels)",
                              "identity cosine to neutral", "… over the source's", "identity cosine to source"],
                             main_rows)
            + ceiling_text
            + "\nPer-region Fréchet distance in our evaluators' feature space (not FID), against the crops of all "
              f"{len(test['rgb'])} test images:\n\n"
            + markdown_table(["crops", "eyes", "mouth"], fd_rows)
            + "\nSeam score, hard / feathered paste of the same edited crops (RMS gradient of edit minus source "
              "across the box border, 0..255 levels per pixel; lower is smoother):\n\n"
            + markdown_table(["model", "eyes", "mouth"], seam_rows)
            + f"\nThe tables below use guidance {guidance:g}.\n"
            + f"\nStrength trade-off (paper Fig. 4; {k} edits per point; identity kept = cosine to the neutral "
              f"over the source's; figure: `{args.figure.as_posix()}`):\n\n"
            + markdown_table(["model", "t_i", "identity kept", "expression accuracy"], curve_rows)
            + f"\nCost (one edit, both regions, {args.steps} steps, "
              f"{where}):\n\n"
            + markdown_table(["model", "M parameters", "seconds / edit"], cost_rows))
    update_section(args.out, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
