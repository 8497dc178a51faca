"""glocon: distributed global + local contrastive pretraining of dense priors, with few-shot plugins."""

__version__ = "0.1.0"
