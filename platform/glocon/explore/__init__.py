"""``glocon explore``: a local web explorer of shards, banks, region maps and results.

A FastAPI app (``app.create_app``) with server-rendered pages over a JSON API. It reads only under
the folders its config names (``config.ExploreConfig``) and answers a click with the same function
``glocon bank query`` uses (``glocon.bank.query.answer``), so the hits a page shows are the hits
``hits.json`` would hold for the same point.

    folders.py    named folders and the path checks every read goes through
    shardsets.py  shard sets: samples by key, the manifest's class index, a small sample cache
    views.py      a sample drawn with its mask / SLIC / FH overlays, as PNG bytes
    banks.py      opened banks: queries, hit tiles, contact sheets
    regions.py    evaluations: the Fig. 5 row of any episode of their episode files
    files.py      probe / sweep folders: listings, markdown and CSV as HTML
    app.py        the routes: pages and /api
    serve.py      uvicorn on the configured host and port
"""
