"""Image sources, superpixels, shards and their readers."""
