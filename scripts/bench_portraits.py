"""The portrait data's section of docs/neural.md: a grid of renders (docs/portraits.png) and rendering speed.

The grid shows test-split identities (rows) with the neutral face and label apexes (columns), at 64²
(native pixels) and at 128², each with its own camera jitter, so that one can check what the models
will see: lips, brows, lash lines, irises and the mouth interior, and whether expressions read.

Three speed measurements: the renderer alone in one process (build the mesh, rasterise, shade, project the
landmarks: what each image costs), the whole command in a fresh process with one and two workers
(start-up, neutrals, shard writing included), and, for comparison, the VTK preview renderer
(``render.MeshRenderer``) drawing the same head at the same size.

Usage: python scripts/bench_portraits.py [--images 600] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from PIL import Image

from face4d.data.labels import LABEL_NAMES
from face4d.data.portraits import PortraitConfig, PortraitPlan, PortraitRenderer
from face4d.eval.report import markdown_table, update_section
from meshops.head import HeadModel
from render import image_grid

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC, GRID = DOCS / "neural.md", DOCS / "portraits.png"
GRID_LABELS = (None, "high_smile", "mouth_open", "eyebrow", "surprise", "anger", "sadness", "mouth_side", "bareteeth",
               "lips_back")
HEADER = "# Neural renderer\n\nEvery figure and table below was written by the command shown with it.\n"


def render_grid(head: HeadModel, seed: int = 0) -> Path:
    """docs/portraits.png: 6 test identities x 10 expressions at 64², 3 x 5 at 128² (palette PNG, small)."""
    renderer = PortraitRenderer(head)
    plan = PortraitPlan(head, PortraitConfig(size=64, images=1, identities=60), seed=seed)
    rng = np.random.default_rng(seed)
    panels = []
    for size, people, labels in ((64, plan.split["test"][:6], GRID_LABELS), (128, plan.split["test"][:3],
                                                                               GRID_LABELS[:5])):
        tiles, captions = [], []
        for person in people:
            for k, label in enumerate(labels):
                weights = None if label is None else plan.synth.sample(
                    k, label=label, identity=person, frames=1, intensity=1.0)["expression_weights"][0]
                camera = renderer.camera(size, rng.uniform(-20, 20), rng.uniform(-10, 10), rng.uniform(-5, 5))
                vertices = head.vertices(plan.synth.identities[person], weights)
                tiles.append(renderer.render(vertices, plan.appearance[person], camera)[0])
                captions.append(label or "neutral")
        panels.append(image_grid(tiles, captions, ncols=len(labels)))
    width = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    image = Image.fromarray(np.concatenate(panels, 0)).quantize(256, method=Image.Quantize.MEDIANCUT)
    image.save(GRID, optimize=True)
    return GRID


def renderer_rate(head: HeadModel, size: int, count: int) -> tuple[float, float]:
    """Images per wall-clock second and per CPU second of the in-process render loop at ``size``."""
    renderer = PortraitRenderer(head)
    plan = PortraitPlan(head, PortraitConfig(size=size, images=count, identities=50), seed=0)
    table = plan.images
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        identity = int(table["identity"][i])
        vertices = head.vertices(plan.synth.identities[identity], table["weights"][i])
        renderer.render(vertices, plan.appearance[identity], renderer.camera(size, *table["camera"][i].tolist()))
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def vtk_rate(head: HeadModel, size: int, count: int) -> tuple[float, float] | None:
    """Frames per wall-clock and per CPU second of the VTK preview renderer on the same head (None
    without pyvista); llvmpipe's render threads count in the CPU time."""
    try:
        from render import MeshRenderer
    except ImportError:
        return None
    with MeshRenderer(head.faces, size=(size, size), bounds=head.neutral[head.region_ids("face")]) as renderer:
        renderer.render(head.neutral)
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            renderer.render(head.neutral + 0.01 * i)
    return count / (time.perf_counter() - start), count / (time.process_time() - cpu)


def command_rate(images: int, workers: int, repeats: int) -> tuple[float, float]:
    """Images per wall-clock and per CPU second (the process and its workers) of a fresh `face4d dataset
    portraits` process, best of ``repeats``."""
    best = (0.0, 0.0)
    for _ in range(repeats):
        tmp = Path(tempfile.mkdtemp())
        cmd = [sys.executable, "-m", "face4d.cli", "dataset", "portraits", "--out", str(tmp / "p"), "--size", "64",
               "--images", str(images), "--identities", "50", "--workers", str(workers), "--quiet"]
        start, cpu = time.perf_counter(), _children_cpu()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        best = max(best, (images / (time.perf_counter() - start), images / (_children_cpu() - cpu)))
        shutil.rmtree(tmp)
    return best


def _children_cpu() -> float:
    times = os.times()
    return times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    command = f"python scripts/bench_portraits.py --images {args.images} --repeats {args.repeats}"
    head = HeadModel.load()
    grid = render_grid(head)
    print(f"wrote {grid} ({grid.stat().st_size / 1024:.0f} KB)")
    load = os.getloadavg()[0]
    rows = []
    for size in (64, 128):
        rate = renderer_rate(head, size, args.images // 2)
        rows.append(["numpy rasteriser, render loop, 1 process", f"{size}²", *(f"{r:.1f}" for r in rate)])
        print(rows[-1])
    command_cpu = 0.0
    for workers in (1, 2):
        rate = command_rate(args.images, workers, args.repeats)
        command_cpu = max(command_cpu, rate[1])
        rows.append([f"`face4d dataset portraits --images {args.images}`, `--workers {workers}`, whole command",
                     "64²", *(f"{r:.1f}" for r in rate)])
        print(rows[-1])
    rate = vtk_rate(head, 64, 100)
    if rate is not None:
        rows.append(["VTK preview renderer (`render.MeshRenderer`, grey head, for comparison)", "64²",
                     *(f"{r:.1f}" for r in rate)])
        print(rows[-1])
    text = "\n".join([
        "## Portrait data", "",
        "`face4d dataset portraits` renders painted random identities of the ICT head (`face4d/data/portraits.py`"
        " says how) with the 18 label recipes, with the numpy camera and rasteriser of `render/camera.py` and "
        "`render/raster.py`. Test-split identities, each tile with its own camera jitter (yaw ±20°, pitch ±10°, "
        "roll ±5°); top: 64², bottom: 128²:", "",
        "![portrait grid](portraits.png)", "",
        f"Made by `{command}`.", "",
        "### Rendering speed", "",
        f"Made by `{command}` on {platform.machine()} with {os.cpu_count()} CPU cores (Python "
        f"{platform.python_version()}, numpy {np.__version__}). The machine was shared (load average "
        f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), so the wall-clock rates are lower "
        "bounds; images per CPU second is the cost that does not depend on the load: two free cores give "
        "about twice that with `--workers 2`.", "",
        markdown_table(["what", "size", "images / wall-clock s", "images / CPU s"], rows),
        "Target (issue 17): at least 20 images/s at 64² on 2 cores. Each image is rasterised at twice its "
        "size and box-filtered (2 x 2 supersampling); the whole-command rates include the process start, the "
        "neutral image of each of the 50 identities and writing the shards. The wall-clock rates on this loaded "
        f"machine miss the target; the CPU cost (about {command_cpu:.0f} images per CPU second for the whole "
        "command) meets it on two free cores only by extrapolation, which this run did not measure. The VTK row "
        "draws the bare grey "
        "head with its vertices shifted (no mesh building, paint, mouth interior, background, mask or landmarks) "
        "at 1.5 x 1.5 supersampling: per frame it is cheaper than the numpy path, which the portrait data uses for "
        "what VTK's previews do not give (per-vertex paint, back faces drawn as the mouth interior, exact coverage "
        "masks, no OpenGL context).",
    ])
    if not DOC.exists():
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(HEADER)
    update_section(DOC, "portraits", text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
