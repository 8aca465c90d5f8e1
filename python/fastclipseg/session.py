"""Interactive sessions: encode an image once, then ask many questions of it.

`Session` is segment-anything's `set_image` -> `predict` pattern for CLIPSeg: the vision stage
runs once when the session is made; each `segment(prompt)` then costs the prompt stage (cached
by text) and the decoder only. A session keeps the history of its results; the last one is the
current mask, which `refine("exclude the collar")` combines with a new prompt (see
`fastclipseg.prompts.expressions` for the phrases and the fuzzy algebra), `undo()` steps back and
`reset()` clears.

Expressions and refinements are evaluated on probability maps at the image's own size; their
result is a `SegmentationResult` whose "logits" are the logit of the combined probability at
full size (so masks, RLE, scores and stability come from the same native pass as any result).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .core import InferenceCore, core_of
from .features import DenseFeatures, dense_features
from .ops.edges import as_edges
from .ops.validation import check_threshold, load_image
from .prompts.expressions import combine, evaluate, refinement
from .prompts.image_prompts import ImagePrompt
from .prompts.resolve import PromptItem, resolve_prompts
from .results import SegmentationResult

# |logit| above this is probability 0 or 1 in float32; it also keeps infinities (which the
# upsampling kernel turns into NaN when multiplied by a zero weight) out of the native pass.
_LOGIT_LIMIT = 100.0


def logit_of(probabilities: np.ndarray) -> np.ndarray:
    """`log(p / (1 - p))` in float32, clipped to +-100 (where float32 probabilities are 0 or 1)."""
    p = np.asarray(probabilities, dtype=np.float64)
    with np.errstate(divide="ignore"):
        values = np.log(p) - np.log1p(-p)
    return np.clip(values, -_LOGIT_LIMIT, _LOGIT_LIMIT).astype(np.float32)


def result_from_probabilities(label: str, probabilities: np.ndarray, threshold: float,
                              threads: int | None = None) -> SegmentationResult:
    """A one-prompt `SegmentationResult` from an `H x W` probability map at the image's own size."""
    height, width = probabilities.shape
    return SegmentationResult(prompts=[label], logits=logit_of(probabilities)[None], image_size=(height, width),
                              threshold=threshold, threads=threads)


class Session:
    """One image, encoded once, and the masks asked of it. Make one with `FastSegmenter.session`
    (or `Session(segmenter_or_core, image)`).

    `segment(prompt)`: a text prompt, a prompt expression ("a dog OR a cat {+5}"), or an image
    prompt (`ImagePrompt`, a PIL image or an array: "things like this"); the result becomes the
    current mask. `refine(phrase)` combines the current mask with a new prompt ("exclude the
    collar", "only the head", "and the leash"); `refine_with_mask()` asks for more of what the
    current mask covers, with the masked image itself as the prompt. `history` lists the results,
    `current` is the last, `undo()` drops it, `reset()` drops them all. `edges` (as in
    `FastSegmenter.segment`) makes every mask of the session follow the image's edges.
    """

    def __init__(self, segmenter: object, image: object, threshold: float = 0.5, *, edges: object = None) -> None:
        self.core: InferenceCore = core_of(segmenter)
        self.threshold = check_threshold(threshold)
        self.edges = as_edges(edges)
        self.image = load_image(image, self.core.max_image_pixels)
        self.image_size: tuple[int, int] = (self.image.shape[0], self.image.shape[1])
        # The vision stage, once for the whole session.
        self.activations = self.core.encode_images(self.core.pixel_values([self.image]))
        self.history: list[SegmentationResult] = []

    # -- asking --------------------------------------------------------------------------------

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Decoder logits `(K, h, w)` of this image for K prompt embeddings (the decoder alone)."""
        index = torch.zeros(embeddings.shape[0], dtype=torch.long)
        return self.core.decode(self.activations, embeddings, index).cpu()

    def predict(self, prompts: object) -> SegmentationResult:
        """Masks for one or more prompts (text, expressions, image prompts), without touching the
        history: what `segment` computes."""
        return predict_prompts(self, resolve_prompts(prompts))

    def segment(self, prompt: object) -> SegmentationResult:
        """The mask for one prompt, which becomes the current mask."""
        result = self.predict([prompt] if isinstance(prompt, str) or not isinstance(prompt, Sequence) else prompt)
        if len(result.prompts) != 1:
            raise ValueError(f"segment() takes one prompt, got {len(result.prompts)}; use predict() for several")
        self.history.append(result)
        return result

    def refine(self, phrase: str) -> SegmentationResult:
        """Combine the current mask with a new prompt, from a phrase such as "exclude the collar"
        (AND NOT), "only the head" (AND) or "and the leash" (OR); see `fastclipseg.prompts.expressions`
        for every opening word. The new term may itself be an expression."""
        current = self._require_current("refine")
        operation, term = refinement(phrase)
        new = self.predict([term])
        combined = combine(operation, current.probs[0], new.probs[0])
        symbol = {"and_not": "AND NOT", "and": "AND", "or": "OR"}[operation]
        label = f"({current.prompts[0]}) {symbol} ({new.prompts[0]})"
        result = result_from_probabilities(label, combined, self.threshold, self.core.kernel_threads)
        self.history.append(result)
        return result

    def refine_with_mask(self, mask: np.ndarray | None = None) -> SegmentationResult:
        """More of this: the session's image with `mask` (default: the current mask) as an image
        prompt, with the CLIPSeg paper's visual prompt engineering (crop to the mask's box,
        darken and blur the background). The result becomes the current mask."""
        if mask is None:
            mask = self._require_current("refine_with_mask").masks[0]
        result = self.predict([ImagePrompt(self.image, mask=mask)])
        self.history.append(result)
        return result

    def dense_features(self, method: str = "clearclip", size=None, stride: int | None = None) -> DenseFeatures:
        """Dense CLIP features of the session's image, reusing its vision-stage activations."""
        return dense_features(self.core, self.image, method=method, size=size, stride=stride,
                              activations=self.activations)

    # -- history -------------------------------------------------------------------------------

    @property
    def current(self) -> SegmentationResult | None:
        """The last result (None before the first `segment`)."""
        return self.history[-1] if self.history else None

    def undo(self) -> SegmentationResult | None:
        """Drop the current result; returns the one before it (or None)."""
        if not self.history:
            raise ValueError("nothing to undo: the session has no result yet")
        self.history.pop()
        return self.current

    def reset(self) -> None:
        """Drop every result (the image stays encoded)."""
        self.history.clear()

    def _require_current(self, what: str) -> SegmentationResult:
        if self.current is None:
            raise ValueError(f"{what}() needs a current mask: call segment(prompt) first")
        return self.current


# -- what a prompt can be ---------------------------------------------------------------------








def _leaf_key(item: PromptItem) -> tuple:
    """What the network runs on, once per call: a text, an image prompt (by its key), an embedding row."""
    if item.kind == "image":
        return ("image", item.value.key)
    if item.kind == "embedding":
        return ("embedding", id(item))
    return ("text", item.value)


def edge_fields(session: Session) -> dict:
    """The `SegmentationResult` fields that make a model-resolution result of `session` edge-aware."""
    if session.edges is None:
        return {}
    return {"edges": session.edges, "guide": session.image}


def predict_prompts(session: Session, items: list[PromptItem]) -> SegmentationResult:
    """Every kind of prompt (`resolve_prompts`' items) on the image `session` has encoded: one mask
    per prompt, in order.

    Each distinct text, image prompt and embedding (expressions contribute their terms) runs
    through the prompt stage (cached) and the decoder once. Without expressions the result keeps
    the model's logits; with them, every map is taken to the image's size, the expressions are
    evaluated there, and the result holds the logits of the combined probabilities.
    """
    core = session.core
    leaves: dict[tuple, PromptItem] = {}
    for item in items:
        if item.kind == "expression":
            for term in item.value.terms():
                leaves.setdefault(("text", term), PromptItem("text", term, term))
        else:
            leaves.setdefault(_leaf_key(item), item)
    logits = dict(zip(leaves, session.logits(core.embed(list(leaves.values())))))
    labels = [item.label for item in items]
    threads = core.kernel_threads
    if all(item.kind != "expression" for item in items):
        stacked = torch.stack([logits[_leaf_key(item)] for item in items]).numpy()
        return SegmentationResult(prompts=labels, logits=stacked, image_size=session.image_size,
                                  threshold=session.threshold, threads=threads, **edge_fields(session))
    # Every leaf at the image's size (one native pass; edge-aware with edges, so the combination
    # is too), where the expressions combine them.
    leaf_logits = torch.stack(list(logits.values())).numpy()
    full_size = SegmentationResult(prompts=[""] * len(logits), logits=leaf_logits, image_size=session.image_size,
                                   threads=threads, **edge_fields(session)).probs
    probabilities = dict(zip(logits, full_size))
    by_term = {key[1]: p for key, p in probabilities.items() if key[0] == "text"}
    maps = [evaluate(item.value, by_term) if item.kind == "expression" else probabilities[_leaf_key(item)]
            for item in items]
    return SegmentationResult(prompts=labels, logits=logit_of(np.stack(maps)), image_size=session.image_size,
                              threshold=session.threshold, threads=threads)
