"""Integrations with other engines; each imports its engine only when used.

- `fastclipseg.integrations.ray`: scale segmentation of image collections and videos out over a
  Ray cluster with Ray Data (`pip install 'fastclipseg[ray]'`).
"""
