"""The explorer's API and pages through FastAPI's TestClient: hits equal `glocon bank query`'s for the
same click, Fig. 5 rows reproduce the evaluation's counts, and every kind of bad input is a clear
4xx message (JSON in the API, text in the page) after which the server keeps serving."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the explorer needs the 'explore' extra (fastapi, uvicorn, jinja2)")
from fastapi.testclient import TestClient  # noqa: E402

from glocon.explore.app import create_app  # noqa: E402
from glocon.explore.config import ExploreConfig  # noqa: E402

from explore_data import build_explore_data, explore_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def data(coco128, shared_tmp) -> dict[str, Path]:
    return build_explore_data(coco128, shared_tmp / "explore-data")


@pytest.fixture(scope="module")
def client(data) -> TestClient:
    return TestClient(create_app(explore_config(data)))


@pytest.fixture(scope="module")
def keys(client) -> list[str]:
    return client.get("/api/shards/train").json()["keys"]


def _job(name: str):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cli_hits(bank: Path, key: str, out: Path, *where: str) -> dict:
    """What `glocon bank query --config <bank>/config.resolved.yaml key=... point=...` writes to hits.json."""
    argv = ["--config", str(bank / "config.resolved.yaml"), f"bank={bank}", f"key={key}", f"out={out}", *where]
    assert _job("query_bank").main(argv) == 0
    return json.loads((out / "hits.json").read_text())


@pytest.mark.parametrize(
    "params, where",
    [({"x": 40, "y": 30}, ["point=[40,30]"]), ({"box": "10,12,50,40"}, ["box=[10,12,50,40]"]), ({"superpixel": 3}, ["superpixel=3"])],
    ids=["point", "box", "superpixel"],
)
def test_api_returns_exactly_the_hits_json_glocon_bank_query_writes_for_the_same_click(client, data, keys, tmp_path, params, where):
    api = client.get("/api/query", params={"bank": "a", "shards": "train", "key": keys[1], **params})
    assert api.status_code == 200, api.text
    written = cli_hits(data["bank_a"], keys[1], tmp_path / "q", *where)
    written.pop("sheet")  # the CLI's file beside hits.json; the explorer writes no files (/api/sheet draws it)
    assert api.json() == written
    assert len(written["hits"]) == 6  # the bank's own query.k, from its config.resolved.yaml


def test_the_sheet_endpoint_draws_the_contact_sheet_the_cli_writes(client, data, keys, tmp_path):
    png = client.get("/api/sheet", params={"bank": "a", "key": keys[0], "x": 20, "y": 20})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    cli_hits(data["bank_a"], keys[0], tmp_path / "q", "point=[20,20]")
    ours = np.asarray(Image.open(io.BytesIO(png.content)).convert("RGB"))
    theirs = np.asarray(Image.open(tmp_path / "q" / "sheet.png").convert("RGB"))
    assert np.array_equal(ours, theirs)


def test_side_by_side_banks_each_show_their_own_hits_on_one_page(client, keys):
    page = client.get("/sample", params={"shards": "train", "key": keys[2], "x": 30, "y": 30, "bank": "a", "bank2": "b"})
    assert page.status_code == 200
    for bank in ("a", "b"):
        hits = client.get("/api/query", params={"bank": bank, "key": keys[2], "x": 30, "y": 30}).json()["hits"]
        section = page.text.split(f'<section class="panel" data-bank="{bank}">')[1].split("</section>")[0]
        assert [f'data-id="{h["id"]}"' in section for h in hits] == [True] * len(hits)
    a = client.get("/api/query", params={"bank": "a", "key": keys[2], "x": 30, "y": 30}).json()
    b = client.get("/api/query", params={"bank": "b", "key": keys[2], "x": 30, "y": 30}).json()
    assert [h["score"] for h in a["hits"]] != [h["score"] for h in b["hits"]]  # two priors, two answers


def test_a_point_outside_the_image_is_a_400_in_the_api_and_a_message_in_the_page(client, keys):
    api = client.get("/api/query", params={"bank": "a", "key": keys[0], "x": 500, "y": 10})
    assert api.status_code == 400 and "point (500, 10) outside the 96x72" in api.json()["error"]
    page = client.get("/sample", params={"shards": "train", "key": keys[0], "x": 500, "y": 10})
    assert page.status_code == 400 and "outside the 96x72 query image" in page.text
    assert '<img id="view"' in page.text  # the sample is still shown beside the message
    assert client.get("/api/query", params={"bank": "a", "key": keys[0], "x": 5, "y": 5}).status_code == 200


def test_an_unknown_key_is_a_404_naming_the_set_and_the_server_keeps_serving(client):
    api = client.get("/api/query", params={"bank": "a", "shards": "train", "key": "coco128/nope", "x": 1, "y": 1})
    assert api.status_code == 404 and "'coco128/nope' is not in shards set 'train'" in api.json()["error"]
    page = client.get("/sample", params={"shards": "train", "key": "coco128/nope"})
    assert page.status_code == 404 and 'id="error"' in page.text and "coco128/nope" in page.text
    assert client.get("/").status_code == 200


def test_a_bank_built_from_other_shards_is_named_as_such(client, data, keys):
    api = client.get("/api/query", params={"bank": "other", "shards": "train", "key": keys[0], "x": 1, "y": 1})
    assert api.status_code == 409 and "bank 'other' was built from other shards" in api.json()["error"]
    # A bank whose shards lie in no configured set cannot be opened at all.
    cfg = explore_config(data)
    alone = TestClient(create_app(cfg.model_copy(update={"shards": {"train": str(data["train"])}})))
    r = alone.get("/api/query", params={"bank": "other", "key": keys[0], "x": 1, "y": 1})
    assert r.status_code == 409 and "outside the explorer's shards sets" in r.json()["error"] and str(data["other"]) in r.json()["error"]


def test_a_missing_bank_file_is_reported_and_the_bank_opens_once_it_is_back(data, keys, tmp_path):
    bank = tmp_path / "bank"
    shutil.copytree(data["bank_a"], bank)
    (bank / "index.faiss").rename(tmp_path / "index.faiss")
    client = TestClient(create_app(explore_config(data).model_copy(update={"banks": {"a": str(bank)}})))
    r = client.get("/api/query", params={"bank": "a", "key": keys[0], "x": 1, "y": 1})
    assert r.status_code == 404 and f"bank index not found: {bank / 'index.faiss'}" in r.json()["error"]
    (tmp_path / "index.faiss").rename(bank / "index.faiss")
    assert client.get("/api/query", params={"bank": "a", "key": keys[0], "x": 1, "y": 1}).status_code == 200


def test_a_bank_prior_outside_the_configured_folders_is_refused(data, keys):
    client = TestClient(create_app(explore_config(data).model_copy(update={"inputs": []})))
    r = client.get("/api/query", params={"bank": "a", "key": keys[0], "x": 1, "y": 1})
    assert r.status_code == 403 and "prior" in r.json()["error"] and "'inputs'" in r.json()["error"]


def test_a_path_with_dotdot_is_refused_and_the_server_keeps_serving(client, data, tmp_path):
    for path in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "trials%2F..%2F..%2Fshards-train%2Fmanifest.json"):
        r = client.get(f"/files/results/probe/{path}")
        assert r.status_code == 403 and "refused" in r.text, path
    # A link inside a served folder that points out of it is refused too.
    folder = tmp_path / "results"
    shutil.copytree(data["probe"], folder)
    (folder / "escape.md").symlink_to(data["train"] / "manifest.json")
    linked = TestClient(create_app(ExploreConfig(results={"probe": str(folder)})))
    r = linked.get("/files/results/probe/escape.md")
    assert r.status_code == 403 and "leads outside" in r.text
    assert client.get("/files/results/probe/results.md").status_code == 200


def test_results_files_show_markdown_csv_and_images_but_never_their_html(client):
    md = client.get("/files/results/probe/results.md")
    assert md.status_code == 200 and "<table>" in md.text and "<td>12.5</td>" in md.text
    assert "random &lt;b&gt;init&lt;/b&gt;" in md.text  # raw HTML in a results file is shown, not run
    csv = client.get("/files/results/probe/results.csv")
    assert "<td>pretrained</td><td>12.5</td>" in csv.text
    png = client.get("/files/results/probe/probe-vs-epoch.png")
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).size == (96, 64)
    listing = client.get("/files/results/probe/trials")
    assert "notes.txt" in listing.text


def test_the_index_links_every_configured_folder_and_reports_a_missing_one(data):
    cfg = explore_config(data).model_copy(update={"results": {"probe": str(data["probe"]), "sweep": str(data["probe"] / "nowhere")}})
    page = TestClient(create_app(cfg)).get("/")
    assert page.status_code == 200
    for link in ('href="/shards/train"', 'href="/shards/other"', 'href="/eval/qgnet"', 'href="/eval/proto"', 'href="/files/results/probe/results.md"'):
        assert link in page.text, link
    assert "folder not found" in page.text and "nowhere" in page.text


def test_the_class_filter_lists_exactly_the_samples_the_manifest_indexes_under_it(client, data):
    manifest = json.loads((data["train"] / "manifest.json").read_text())
    cls, want = next(iter(manifest["classes"].items()))
    got = client.get("/api/shards/train", params={"cls": cls}).json()
    assert got["keys"] == sorted(want) and got["total"] == len(want)
    page = client.get("/shards/train", params={"cls": cls})
    assert page.text.count('class="thumb"') == len(want)
    assert client.get("/api/shards/train", params={"cls": 9999}).status_code == 404


def test_overlays_change_the_pixels_and_an_unknown_overlay_is_refused(client, keys):
    def pixels(overlay: str) -> np.ndarray:
        r = client.get("/api/image", params={"shards": "train", "key": keys[0], "overlay": overlay})
        assert r.status_code == 200
        return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))

    plain, mask, slic, both = pixels(""), pixels("mask"), pixels("slic"), pixels("slic,fh")
    assert plain.shape[:2] == (72 * 4, 96 * 4)  # enlarged by a whole factor to reach the display size (384)
    assert (mask != plain).any() and (slic != plain).any() and (both != slic).any()
    assert (slic == (255, 255, 0)).all(-1).any()  # SLIC boundaries in yellow, as Fig. 4
    r = client.get("/api/image", params={"shards": "train", "key": keys[0], "overlay": "bogus"})
    assert r.status_code == 400 and "bogus" in r.json()["error"]


def test_fig5_rows_of_every_episode_add_up_to_the_evaluations_class_counts(client, data):
    results = json.loads((data["qgnet"] / "results.json").read_text())["folds"]["0"]["1"]
    inter: dict[str, float] = {}
    union: dict[str, float] = {}
    n = len(client.get("/api/eval/qgnet/episodes", params={"fold": 0, "shots": 1}).json()["episodes"])
    for i in range(n):
        row = client.get("/api/eval/qgnet/row", params={"fold": 0, "shots": 1, "index": i}).json()
        assert row["region_maps"] == ["guided", "prior"]  # QGNet draws both maps
        c = str(row["class"])
        inter[c] = inter.get(c, 0.0) + row["intersection"]
        union[c] = union.get(c, 0.0) + row["union"]
    assert inter == {c: v for c, v in results["class_intersection"].items() if c in inter}
    assert union == {c: v for c, v in results["class_union"].items() if c in union}
    png = client.get("/api/eval/qgnet/row.png", params={"fold": 0, "shots": 1, "index": 0})
    w, h = Image.open(io.BytesIO(png.content)).size
    assert w > 4 * h  # one row of six panels
    page = client.get("/eval/qgnet/episode", params={"fold": 0, "shots": 1, "index": 0})
    assert 'href="/eval/proto/episode?fold=0&amp;shots=1&amp;index=0"' in page.text  # scored on the same file
    out = client.get("/api/eval/qgnet/row", params={"fold": 0, "shots": 1, "index": n})
    assert out.status_code == 404 and "out of range" in out.json()["error"]


def test_an_episode_file_changed_since_the_evaluation_is_refused(data, tmp_path):
    episodes = tmp_path / "episodes"
    shutil.copytree(data["episodes"], episodes)
    evaluation = tmp_path / "eval"
    shutil.copytree(data["proto"], evaluation)
    results = json.loads((evaluation / "results.json").read_text())
    entry = results["episode_files"][min((k for k in results["episode_files"] if k.startswith("fold0-1shot-seed")), key=lambda k: int(k.rsplit("seed", 1)[1]))]
    entry["path"] = str(episodes / Path(entry["path"]).name)
    (evaluation / "results.json").write_text(json.dumps(results))
    Path(entry["path"]).write_text(Path(entry["path"]).read_text().replace('"supports"', '"supports" ', 1))
    cfg = explore_config(data).model_copy(update={"evals": {"proto": str(evaluation)}, "inputs": [str(data["inputs"]), str(episodes)]})
    r = TestClient(create_app(cfg)).get("/api/eval/proto/row", params={"fold": 0, "shots": 1, "index": 0})
    assert r.status_code == 409 and "changed since the evaluation" in r.json()["error"]


def test_a_bad_query_parameter_is_a_400_that_names_it(client, keys):
    r = client.get("/api/query", params={"bank": "a", "key": keys[0], "x": "left", "y": 3})
    assert r.status_code == 400 and "'x'" in r.json()["error"] and "left" in r.json()["error"]
    r = client.get("/api/query", params={"bank": "a", "key": keys[0], "x": 3})
    assert r.status_code == 400 and "both x and y" in r.json()["error"]
    r = client.get("/api/query", params={"bank": "zz", "key": keys[0], "x": 3, "y": 3})
    assert r.status_code == 404 and "unknown bank 'zz' (configured: a, b, other)" in r.json()["error"]


def test_the_job_binds_127_0_0_1_by_default_and_reports_a_config_typo_in_one_line(capsys):
    from glocon.explore.serve import make_server, url_of

    assert ExploreConfig().host == "127.0.0.1"
    server, sock = make_server(ExploreConfig(port=0))
    try:
        assert sock.getsockname()[0] == "127.0.0.1" and url_of(sock).startswith("http://127.0.0.1:")
    finally:
        sock.close()
    assert _job("explore").main(["--config", str(REPO / "configs" / "explore-demo.yaml"), "prot=1"]) == 2
    err = capsys.readouterr().err
    assert "'prot'" in err and "port" in err
