"""Native pre- and post-processing around the network (thin typed wrappers over `fastclipseg._core`)."""
