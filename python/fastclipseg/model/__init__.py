"""The staged CLIPSeg network: loading, conversion from the original format, and the stages."""

# The released refined model; the default everywhere a model is not named.
DEFAULT_MODEL = "CIDAS/clipseg-rd64-refined"
