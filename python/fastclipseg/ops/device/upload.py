"""uint8 frames in host memory -> the same frames on the device, without stalling the network.

On CUDA, a copy from ordinary (pageable) host memory is synchronous: the driver stages it through
its own pinned buffer, and the calling thread waits. A copy from page-locked ("pinned") memory is
a DMA that runs on a stream of its own, alongside the kernels of other streams. So `FrameUploader`
keeps a small ring of pinned staging buffers (reused, grown when a batch needs more) and issues
each batch's copy on its own CUDA stream; the caller runs its preprocessing on that same stream
and hands the result to the network with an event (see `processing.DeviceBatch`). While the
network computes batch n on its stream, batch n+1 is uploaded and preprocessed.

A staging buffer is rewritten only after the copy that last read it has finished (its event is
waited on first); with two buffers that wait is normally already over.

On a device other than CUDA the frames are simply moved there (nothing to overlap with).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

#: Staging buffers in the ring: one being filled while the previous one's copy runs.
SLOTS = 2


class FrameUploader:
    """Copies lists of `H x W x 3` uint8 frames to `device`; on CUDA through pinned memory on `stream`."""

    def __init__(self, device: torch.device | str, slots: int = SLOTS) -> None:
        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(device=self.device) if self.pinned else None
        self._buffers: list[torch.Tensor | None] = [None] * slots
        self._copied: list[torch.cuda.Event | None] = [None] * slots
        self._next = 0
        self._lock = threading.Lock()

    def upload(self, frames: Sequence[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
        """The frames as uint8 tensors on the device, in order: one `(N, H, W, 3)` batch tensor
        when they all have one shape (what `TorchPreprocessor` resizes without stacking), else a
        list of `(H, W, 3)` tensors.

        On CUDA the copies are queued on `self.stream` and may still be running when this
        returns: use the tensors on that stream (or wait for it), as `processing` does.

        Raises:
            TypeError: a frame is not uint8 (the message names its dtype).
        """
        arrays = [np.asarray(frame) for frame in frames]
        for index, array in enumerate(arrays):
            if array.dtype != np.uint8:
                raise TypeError(f"frame #{index} has dtype {array.dtype}; expected uint8")
        one_shape = len({array.shape for array in arrays}) == 1
        if not self.pinned:
            if one_shape:
                return torch.from_numpy(np.stack(arrays)).to(self.device)
            # from_numpy takes no negative strides: copy only the frames that have them.
            return [torch.from_numpy(np.ascontiguousarray(array)).to(self.device) for array in arrays]
        total = sum(array.nbytes for array in arrays)
        with self._lock:
            slot = self._next
            self._next = (self._next + 1) % len(self._buffers)
            if self._copied[slot] is not None:
                self._copied[slot].synchronize()  # the copy that last read this buffer is done
            buffer = self._buffers[slot]
            if buffer is None or buffer.numel() < total:
                buffer = torch.empty(max(total, 1), dtype=torch.uint8, pin_memory=True)
                self._buffers[slot] = buffer
            host = buffer.numpy()
            offset = 0
            for array in arrays:
                # Straight into pinned memory, whatever the frame's strides: no intermediate copy.
                np.copyto(host[offset : offset + array.nbytes].reshape(array.shape), array)
                offset += array.nbytes
            with torch.cuda.stream(self.stream):
                flat = buffer[:total].to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            self._copied[slot] = event
        if one_shape:
            return flat.view(len(arrays), *arrays[0].shape)
        frames_on_device, offset = [], 0
        for array in arrays:
            frames_on_device.append(flat[offset : offset + array.nbytes].view(array.shape))
            offset += array.nbytes
        return frames_on_device
