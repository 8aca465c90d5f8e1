"""Batch-invariant numerics on the CPU: every image through its own network calls.

CPU matrix kernels (oneDNN, MKL) choose their blocking and thread split from the shape of each
call, so the same image's activations differ in the last bits when it shares a vision batch with
2 or 5 other images, and its logits by about 1e-5 relative (measured on an AMD EPYC: a linear
layer with 10 rows rounds differently from the same layer with 2). Those bits decide mask pixels
on the threshold and the printed scores, so a run resumed after a stop (other batch boundaries),
`segment_batch` with another `batch_size`, a stream and a single `segment` would disagree.

Running the vision stage on one image per call, and the decoder on one image's (image, prompt)
pairs per call, makes every call's shape depend on that image and its prompts only: results are
the same whatever else is in the batch, by construction. On the CPU this costs nothing that
matters: one image is already 485 rows per matrix product, enough to fill the cores (see the
README's measurement). CUDA engines keep their batches, which is where a GPU's throughput comes from.
"""

from __future__ import annotations

import torch


class PerImageEngine:
    """Wraps an engine so that each image runs through its own `encode_images` and `decode` calls;
    every other attribute (name, precision, device, warm, ...) is the wrapped engine's."""

    def __init__(self, engine) -> None:
        self.inner = engine

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def encode_prompts(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.inner.encode_prompts(input_ids)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[0] <= 1:
            return self.inner.encode_images(pixel_values)
        # (L, B, T, D): images along dimension 1.
        return torch.cat([self.inner.encode_images(pixel_values[i : i + 1]) for i in range(pixel_values.shape[0])], 1)

    def decode(self, activations: torch.Tensor, embeddings: torch.Tensor, image_index: torch.Tensor) -> torch.Tensor:
        images = activations.shape[1]
        if images <= 1:
            return self.inner.decode(activations, embeddings, image_index)
        image_index = image_index.to("cpu")
        parts: list[torch.Tensor] = []
        rows_of_parts: list[torch.Tensor] = []
        for image in range(images):
            rows = (image_index == image).nonzero().flatten()
            if rows.numel() == 0:
                continue
            own = activations[:, image : image + 1].contiguous()
            parts.append(self.inner.decode(own, embeddings[rows.to(embeddings.device)], torch.zeros(rows.numel(), dtype=torch.long)))
            rows_of_parts.append(rows)
        order = torch.cat(rows_of_parts)
        stacked = torch.cat(parts)
        if torch.equal(order, torch.arange(order.numel())):
            return stacked  # pairs grouped by image, as every caller here builds them
        logits = torch.empty_like(stacked)
        logits[order.to(stacked.device)] = stacked
        return logits
