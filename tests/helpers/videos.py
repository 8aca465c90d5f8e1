"""Small test videos: a disc crossing a noisy background, 72x96 at 25 fps (needs PyAV)."""

from __future__ import annotations

import numpy as np
from fastclipseg.bench.measure import moving_disc_frames


def make_video(path, codec: str = "libx264", *, frames: int, faststart: bool = True):
    """Write `frames` frames to `path`; with `faststart` the MP4's index goes at the front, so a
    cut-short copy still opens. Returns `path`."""
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=25)
        stream.height, stream.width, stream.pix_fmt = 72, 96, "yuv420p"
        for frame, _ in moving_disc_frames(frames, 72, 96):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
