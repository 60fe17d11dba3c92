"""Expression filling and geometry-adaptive generation (Sec. 3.2, App. C Alg. 3 and 4).

Both tasks condition the *unconditional* DDPM on known frames, purely through its reverse process:

* **Filling** (Alg. 3). ``x_T`` is N(0, I) on the unknown frames and ``q(x_T | x_0)`` (Eq. 3) on the
  known ones (``initial_noise``). After every reverse step the sampler's draw ``\\hat x_{t-1}`` is
  kept on the unknown frames, while the known frames are replaced by a fresh draw of
  ``q(x_{t-1} | x_0)`` (``KnownFrames``, a ``StepHook``); at the last step they are set to ``x_0``
  itself, so the output's known frames *are* the input.
* **Geometry-adaptive generation** (Alg. 4) is filling with a single known frame, the subject's
  neutral face, first (N2E) or last (E2N), run ``passes`` times (the paper: 5): pass 1 is Alg. 3;
  every later pass draws ``x_T`` for *all* frames from ``q(x_T | x_0^{prev})``, the previous pass's
  result, so that the generated frames and the enforced one are harmonised progressively
  (``sample_with_known_frames``).

**Reconstruction guidance** (our addition; ``reconstruction=0, anchor=False`` gives the paper's
algorithms exactly).
Replacement alone hands the known frames to the network only as noisy copies, one voice among F
frames, so the unknown frames settle early on a face of their own. With a single known frame
(Alg. 4) the generated frames then keep another person's face shape: on the default model the first
generated frame sat 0.41 cm (mean landmark distance) from the enforced neutral, against 0.11 cm
between other frames. Alg. 4's later passes cannot mend this here: they start from ``q(x_T | x_0)``,
whose signal ``sqrt(abar_T)`` is ~4e-5 at T = 2000, so each pass is in effect a fresh draw. So every
reverse step also corrects the model's ``x_0`` estimate of the unknown frames by the gradient that
pulls its estimate of the *known* frames onto their values (Ho et al. 2022, "Video Diffusion
Models", Sec. 3.1: ``x0^u -= w sqrt(abar_t) / 2 * grad_{x_t^u} ||x0^k - x0_hat^k(x_t)||^2``;
``KnownFrameReconstruction``), or, by default, more directly: the error of the model's estimate of the
known frames is taken off its estimate of the unknown ones, interpolated in time (the anchor term).
The known frames are still replaced as in Alg. 3, so they stay exact.

Label control composes with both: ``compose_hooks(guidance, known_frames)`` runs the Adagrad
refinement of Alg. 1 on ``\\hat x_{t-1}`` first and then re-imposes the known frames (Alg. 4 lines
12-15), so the classifier steers only what is not given.

Choices the paper leaves open, documented here once:

* Alg. 4 writes ``return x_0`` inside the loop over passes; read literally the later passes would
  never run, so the result is the *last* pass's ``x_0`` and earlier passes only seed the next ``x_T``.
* Alg. 4 places the label refinement inside every pass, so guidance (when asked for) acts in all
  passes, not only the last.
* In passes > 1 the known frames of ``x_0^{prev}`` already equal the given ones exactly (the last
  step sets them), so "``x_T`` from the previous result" and "known frames from the given
  neutral" coincide.
* Samplers: both of the package's samplers are ancestral DDPM on a schedule (all T steps, or a
  respaced one of K strided steps). The hook noises the known frames with the *sampling*
  diffusion's own ``q_sample`` at its own index ``t_prev``; a respaced diffusion keeps the trained
  ``alphas_cumprod`` at its kept steps, so its index ``k`` is exactly the noise level of training
  step ``timestep_map[k]``.
* Randomness: the known frames' noise is drawn from the sampler's generator, so a seed gives the
  same result.
"""
from __future__ import annotations

import re

import numpy as np
import torch

from face4d.diffusion import GaussianDiffusion, NoiseModel, StepHook, extract
from face4d.errors import Face4DError
from face4d.guidance import compose_hooks
from face4d.settings import RECONSTRUCTION_WEIGHT, check_reconstruction_weight

_RANGE = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")

# --------------------------------------------------------------------------------- known frames

def parse_known(spec: str, frames: int) -> np.ndarray:
    """The (frames,) bool mask of known frames described by ``spec``, e.g. ``"0-9,30-39"`` or
    ``"0,5,10-12"``: 0-based frame indices and inclusive ranges, comma-separated (overlaps are
    merged). The spec must leave at least one frame to fill and name at least one known frame."""
    if frames < 1:
        raise Face4DError(f"the sequence has no frames to fill (length {frames})")
    if spec is None or not str(spec).strip():
        raise Face4DError("the known-frame spec is empty; give frame indices or ranges such as 0-9,30-39")
    known = np.zeros(frames, dtype=bool)
    for part in str(spec).split(","):
        part = part.strip()
        match = _RANGE.match(part)
        if match is None:
            raise Face4DError(f"bad known-frame spec {spec!r}: {part!r} is not a frame index or a range "
                              "such as 3 or 0-9 (0-based, inclusive)")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise Face4DError(f"bad known-frame spec {spec!r}: range {part!r} is reversed (write {last}-{first})")
        if last >= frames:
            raise Face4DError(f"known frame(s) {part!r} out of range: frames are 0-{frames - 1} "
                              f"(the sequence has {frames} frames)")
        known[first: last + 1] = True
    check_known(known, frames)
    return known


def check_known(known, frames: int, lengths: np.ndarray | None = None, batch: int | None = None) -> np.ndarray:
    """Validate a known-frame mask, (F,) or (B, F) bool, and return it as a (B, F) bool array
    (B = ``batch``, default 1 for an (F,) mask). ``lengths`` (B,) are the sequences' valid lengths;
    a known frame past one is an error, and every sequence needs at least one known and one
    unknown valid frame."""
    known = np.asarray(known)
    if known.dtype != bool:
        raise Face4DError(f"the known-frame mask must be boolean, got {known.dtype}")
    if known.ndim == 1:
        known = np.broadcast_to(known, (batch or 1, known.shape[0]))
    if known.ndim != 2 or known.shape[1] != frames or (batch is not None and known.shape[0] != batch):
        expected = f"({frames},) or ({batch if batch is not None else 'B'}, {frames})"
        raise Face4DError(f"the known-frame mask must have shape {expected}, got {known.shape}")
    lengths = np.full(known.shape[0], frames) if lengths is None else np.asarray(lengths)
    valid = np.arange(frames)[None] < lengths[:, None]
    for i in range(known.shape[0]):
        where = f" of sequence {i}" if known.shape[0] > 1 else ""
        past = np.flatnonzero(known[i] & ~valid[i])
        if past.size:
            raise Face4DError(f"known frame {past[0]} lies past the end{where} (length {lengths[i]})")
        if not known[i].any():
            raise Face4DError(f"no known frame{where}: give at least one frame to condition on")
        if known[i][valid[i]].all():
            raise Face4DError(f"every frame{where} is known: nothing to fill")
    return np.ascontiguousarray(known)


def _frame_bool(known: torch.Tensor | np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A (B, F) or (F,) mask as a bool (B, F, 1, ..., 1) tensor that broadcasts to ``like``."""
    known = torch.as_tensor(np.asarray(known) if not isinstance(known, torch.Tensor) else known)
    known = known.to(device=like.device, dtype=torch.bool)
    if known.ndim == 1:
        known = known.expand(like.shape[0], -1)
    if tuple(known.shape) != tuple(like.shape[:2]):
        raise ValueError(f"known-frame mask shape {tuple(known.shape)} does not match (B, F) = {tuple(like.shape[:2])}")
    return known.reshape(*known.shape, *([1] * (like.ndim - 2)))


def initial_noise(
    diffusion: GaussianDiffusion,
    x0: torch.Tensor,
    known: torch.Tensor | np.ndarray | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``x_T`` of Alg. 3 lines 1-2: N(0, I) on the unknown frames, ``q(x_T | x_0)`` (Eq. 3) on the
    ``known`` ones. With ``known=None`` every frame is drawn from ``q(x_T | x_0)``: the ``x_T`` of
    Alg. 4's later passes (line 6). ``T`` is the last index of ``diffusion`` (respaced or not).

    One standard normal draw serves both parts (each element uses it once, so they stay independent).
    """
    eps = torch.randn(tuple(x0.shape), generator=generator, dtype=x0.dtype,
                      device=generator.device if generator is not None else x0.device).to(x0.device)
    t = torch.full((x0.shape[0],), diffusion.num_timesteps - 1, dtype=torch.long, device=x0.device)
    noised = diffusion.q_sample(x0, t, noise=eps)
    if known is None:
        return noised
    return torch.where(_frame_bool(known, x0), noised, eps)


class KnownFrames:
    """A ``StepHook`` that re-imposes known frames after every reverse step (Alg. 3 lines 10-12).

    Args:
        diffusion: the diffusion that samples (respaced or not): its ``q_sample`` at the hook's
            ``t_prev`` draws the noise level of ``x_prev``.
        x0: (B, F, 68, 3) clean sequences, *normalised* like the model's data; only the known
            frames are read.
        known: (B, F) or (F,) bool, True on known frames.
        generator: where the fresh noise of every step comes from (share the sampler's).

    After each step the known frames of ``x_prev`` become a fresh draw of ``q(x_{t-1} | x_0)``, and
    ``x_0`` itself at the last step (``t_prev`` None); the other frames are left as they are.
    Compose it *after* a guidance hook: ``compose_hooks(guidance, known_frames)``.
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        x0: torch.Tensor,
        known: torch.Tensor | np.ndarray,
        generator: torch.Generator | None = None,
    ) -> None:
        self.diffusion = diffusion
        self.x0 = x0.detach()
        self.known = _frame_bool(known, self.x0)
        self.generator = generator

    def __call__(self, x_prev: torch.Tensor, t_prev: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor,
                 out: dict[str, torch.Tensor]) -> torch.Tensor:
        x0 = self.x0.to(device=x_prev.device, dtype=x_prev.dtype)
        value = x0 if t_prev is None else self.diffusion.q_sample(x0, t_prev, generator=self.generator)
        return torch.where(self.known.to(x_prev.device), value, x_prev.detach())

    def initial_noise(self) -> torch.Tensor:
        """``x_T`` of Alg. 3: see ``initial_noise``."""
        return initial_noise(self.diffusion, self.x0, self.known.reshape(self.known.shape[:2]), self.generator)


class KnownFrameReconstruction:
    """Reconstruction guidance for known frames, an ``X0Guidance`` (Ho et al. 2022, Sec. 3.1).

    Args:
        diffusion: the diffusion that samples (its ``sqrt(abar_t)`` scales the correction).
        x0: (B, F, 68, 3) clean sequences, normalised like the model's data; only known frames are read.
        known: (B, F) or (F,) bool, True on known frames.
        weight: ``w``; 0 turns the correction off.
        anchor: also shift the unknown frames' estimate by the known frames' error, carried to each
            frame by ``interpolate_known``.

    Given the model's estimate ``x0_hat(x_t)``, the unknown frames' estimate moves by
    ``-w sqrt(abar_t) / 2`` times the gradient, with respect to ``x_t``, of the squared error of
    the *known* frames' estimate, averaged over the known frames. Through the network's attention
    this is the direction that makes the whole noisy sequence agree with the known frames: identity,
    pose and where the motion is.
    Known frames' estimates are left alone (the step's replacement overrides them).

    The gradient moves the unknown frames only as far as the network's attention links them to the
    known ones, which for a clean-sequence network with a mean-frame skip is little: a generated
    face then keeps an offset from the known frames, and the join to a known frame jumps (Table
    4's join check). ``anchor`` adds the direct correction: the known frames' error, interpolated
    in time between known frames, taken off every unknown frame, weighted by ``abar_t``. At low
    noise that error is the person's shape and head pose the network missed; at high noise it is
    mostly the network's doubt about the expression, which taken off every frame would flatten the
    expression (label accuracy of geometry-adaptive generation falls). The correction is on each
    step's estimate, not on the output, so the following steps denoise the shifted sequence as a
    whole.
    """

    def __init__(self, diffusion: GaussianDiffusion, x0: torch.Tensor, known: torch.Tensor | np.ndarray,
                 weight: float = RECONSTRUCTION_WEIGHT, anchor: bool = True) -> None:
        self.weight = check_reconstruction_weight(weight)
        self.diffusion = diffusion
        self.x0 = x0.detach()
        self.known = _frame_bool(known, self.x0)
        self.known_frames = self.known.reshape(self.known.shape[:2])
        self.anchor = anchor

    @property
    def differentiates(self) -> bool:
        """Whether the correction needs autograd through the network (the gradient term's weight > 0)."""
        return self.weight != 0

    def __call__(self, pred_x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        known = self.known.to(pred_x0.device)
        error = torch.where(known, pred_x0 - self.x0.to(pred_x0), torch.zeros_like(pred_x0))
        step = torch.zeros_like(pred_x0)
        if self.weight:
            # Per sequence, the mean over its known frames: a weight then means the same with one known
            # frame (geometry-adaptive generation) as with thirty (filling).
            count = known.flatten(1).sum(1).clamp(min=1).to(pred_x0)
            grad, = torch.autograd.grad(((error ** 2).flatten(1).sum(1) / count).sum(), x_t)
            step = self.weight / 2 * extract(self.diffusion.sqrt_alphas_cumprod, t, x_t) * grad
        if self.anchor:
            # Weighted by abar_t, the share of signal in x_t: at high noise the known frames' error is
            # mostly the network's doubt about the expression, which must not be taken off every frame.
            gate = extract(self.diffusion.alphas_cumprod, t, x_t)
            step = step + gate * interpolate_known(error.detach(), self.known_frames.to(pred_x0.device))
        return torch.where(known, pred_x0, pred_x0 - step)


def interpolate_known(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``values`` (B, F, ...) of the known frames (``known`` (B, F) bool) carried to every frame: linear
    in time between the nearest known frames before and after, constant beyond the first and last."""
    batch, frames = known.shape
    index = torch.arange(frames, device=known.device).expand(batch, frames)
    before = torch.where(known, index, torch.full_like(index, -1)).cummax(dim=1).values
    after = torch.where(known, index, torch.full_like(index, frames)).flip(1).cummin(dim=1).values.flip(1)
    has_before, has_after = before >= 0, after < frames
    lo, hi = before.clamp(min=0), after.clamp(max=frames - 1)
    span = (hi - lo).clamp(min=1).to(values.dtype)
    weight = torch.where(has_before & has_after, (index - lo).to(values.dtype) / span,
                         torch.where(has_before, torch.zeros_like(span), torch.ones_like(span)))
    shape = (batch, frames) + (1,) * (values.ndim - 2)
    gather = lambda i: torch.gather(values, 1, i.view(shape).expand_as(values))  # noqa: E731
    weight = weight.view(shape)
    return gather(lo) * (1 - weight) + gather(hi) * weight


def sample_with_known_frames(
    diffusion: GaussianDiffusion,
    model: NoiseModel,
    x0: torch.Tensor,
    known: torch.Tensor | np.ndarray,
    passes: int = 1,
    guidance: StepHook | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    reconstruction: float = RECONSTRUCTION_WEIGHT,
    anchor: bool = True,
) -> torch.Tensor:
    """Fill the unknown frames of ``x0`` (B, F, 68, 3), normalised, by ``passes`` runs of Alg. 3.

    ``passes=1`` is expression filling (Alg. 3); more is the harmonised sampling of Alg. 4: pass 1
    starts from ``initial_noise`` (N(0, I) on unknown frames), each later pass from ``q(x_T |
    x_0^{prev})`` on all frames, ``x_0^{prev}`` being the previous pass's result. ``guidance`` (e.g.
    a ``GradientGuidance``) runs before the known frames are re-imposed, in every pass. ``mask``
    (B, F) marks valid frames of padded batches. ``reconstruction`` is the weight of
    ``KnownFrameReconstruction`` at every step (0: the paper's algorithms as written), ``anchor``
    its offset term. Returns the last pass's ``x_0``.
    """
    if passes < 1:
        raise Face4DError(f"passes must be >= 1, got {passes}")
    device = torch.device(device) if device is not None else x0.device
    x0 = x0.to(device)
    keep = KnownFrames(diffusion, x0, known, generator)
    hook = keep if guidance is None else compose_hooks(guidance, keep)
    x0_guidance = KnownFrameReconstruction(diffusion, x0, known, reconstruction, anchor) \
        if reconstruction != 0 or anchor else None
    x = None
    for _ in range(passes):
        x_T = keep.initial_noise() if x is None else initial_noise(diffusion, x, None, generator)
        x = diffusion.sample_loop(model, tuple(x0.shape), mask=mask, generator=generator, progress=progress,
                                    step_hook=hook, x_T=x_T, device=device, x0_guidance=x0_guidance)
    return x


# ------------------------------------------------------------------------------ neutral faces
