"""Device-agnostic torch implementations of fastclipseg's native CPU kernels, for the CUDA path.

The modules here express the native kernels' work (``fastclipseg.ops``) as plain torch
operations, so a GPU pipeline can keep frames and logits on the device. They run on any device
and are tested on the CPU against the native kernels:

- `preprocess`: `TorchPreprocessor`, uint8 frames -> ``(N, 3, S, S)`` float32 network input,
  bit-identical to ``fastclipseg.ops.preprocess`` (Pillow's bilinear resize in exact float64
  matrix products, then the processor's normalisation table); `resize_weights` gives Pillow's
  fixed-point coefficients.
- `postprocess`: upsample + threshold on the device and bit-packed masks
  (``K x H x ceil(W / 8)`` bytes) for the host, where ``fastclipseg.ops.rle.encode_packed`` builds
  the COCO RLE.
- `upload`: `FrameUploader`, uint8 frames to the device through pinned memory on a copy stream.
- `processing`: `DeviceProcessing`, what `FastSegmenter(device="cuda")` runs around the network
  (on by default there; `device_processing=True` runs it on any device).

Never run on a GPU so far (issue 7): the CUDA tests skip where there is no CUDA device; on the
CPU these modules are tested against the native kernels.
"""
