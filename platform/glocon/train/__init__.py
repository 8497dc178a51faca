"""Prior extractor pretraining: views, queues, momentum twin, the Ray Train loop, checkpoints."""
