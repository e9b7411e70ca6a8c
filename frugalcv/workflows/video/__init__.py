"""What the video recognition methods share: per-frame feature extraction (``video.extract``)."""
