"""Images in: source trees, decoding and resizing, the shard format and the workers
that write it, the training set's statistics, augmentation, and the training loader."""
