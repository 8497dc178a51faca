"""Dense evaluation of a prior: how well its frozen features segment.

- ``retrieval``: dense nearest-neighbour retrieval segmentation over a FAISS memory (Hummingbird);
- ``linear``: a 1x1-conv linear probe;
- ``priormap``: the separability of the prior region map (Eq. 9-12) for objects vs background;
- balanced bank purity lives in ``glocon.bank.stats`` and is reused here;
- ``features``: which map is read, from an export or a named baseline;
- ``run``: ``run_probe(cfg)``, the job ``glocon probe`` (``jobs/probe.py``).
"""
