"""Few-shot segmentation: episodes, transforms, metrics (Eq. 13-16) and the runner every plugin shares.

``glocon.fewshot.runner`` holds ``fit`` / ``evaluate`` / ``objective``; the rest are small pure
modules (``metrics``, ``episodes``, ``transforms``) that the runner and the tests use directly.
"""
