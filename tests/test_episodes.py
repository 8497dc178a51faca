"""Episode lists: seeded, saved, reused (and checked when reused), no novel-class image in
validation, supports never equal the query, K-shot counts, and the test resize / scoring geometry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fewshot_helpers import MemorySource, toy_items
from glocon.errors import DataError
from glocon.fewshot.episodefile import episode_file, load_episodes
from glocon.fewshot.episodes import TrainEpisodeSampler, build_episodes, episodes_for, source_image_classes
from glocon.fewshot.transforms import resized_hw, eval_resize, to_original, train_augment

BASE, NOVEL = [1, 2, 3], [4]


@pytest.fixture(scope="module")
def source():
    return MemorySource(toy_items(n_per_class=7, extra_novel_sliver=True), min_pixels=64)


def _draw(source, tmp_path, **kw):
    args = dict(benchmark="embedded", fold=0, mode="test", shots=1, n_episodes=50, seed=321, base=BASE, novel=NOVEL)
    args.update(kw)
    return episodes_for(source, tmp_path, **args)


def test_same_seed_gives_the_same_episodes_and_another_seed_differs(source, tmp_path):
    a = build_episodes(source.class_index, benchmark="embedded", fold=0, mode="val", shots=1, n_episodes=40, seed=321, base=BASE, novel=NOVEL)
    b = build_episodes(source.class_index, benchmark="embedded", fold=0, mode="val", shots=1, n_episodes=40, seed=321, base=BASE, novel=NOVEL)
    c = build_episodes(source.class_index, benchmark="embedded", fold=0, mode="val", shots=1, n_episodes=40, seed=322, base=BASE, novel=NOVEL)
    assert a.episodes == b.episodes
    assert a.episodes != c.episodes


def test_episode_file_is_written_then_reused_without_redrawing(source, tmp_path):
    es, path, reused = _draw(source, tmp_path)
    assert path.is_file() and not reused
    before = path.read_bytes()
    es2, path2, reused2 = _draw(source, tmp_path)
    assert reused2 and path2 == path
    assert es2.episodes == es.episodes
    assert path.read_bytes() == before
    header = json.loads(path.read_text())["header"]
    assert header["shots"] == 1 and header["mode"] == "test" and header["seed"] == 321


def test_reused_file_with_a_different_header_is_refused_with_the_field_named(source, tmp_path):
    _, path, _ = _draw(source, tmp_path)
    data = json.loads(path.read_text())
    data["header"]["fold"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="fold"):
        _draw(source, tmp_path)


def test_reused_file_naming_images_the_data_lacks_is_refused(source, tmp_path):
    _, path, _ = _draw(source, tmp_path)
    data = json.loads(path.read_text())
    data["episodes"][0]["query"] = "not-a-key"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="not-a-key"):
        _draw(source, tmp_path)


def test_supports_are_distinct_never_the_query_and_hold_the_class(source, tmp_path):
    for shots in (1, 5):
        es, _, _ = _draw(source, tmp_path, shots=shots, mode="val", n_episodes=60)
        for e in es.episodes:
            assert len(e.supports) == shots
            assert e.query not in e.supports
            assert len(set(e.supports)) == shots
            for k in (e.query, *e.supports):
                assert k in source.class_index[e.cls]


def test_test_episodes_use_only_novel_classes(source, tmp_path):
    es, _, _ = _draw(source, tmp_path, n_episodes=30)
    assert {e.cls for e in es.episodes} == set(NOVEL)


def test_validation_episodes_never_touch_an_image_with_a_novel_class(source, tmp_path):
    es, path, _ = _draw(source, tmp_path, mode="val", n_episodes=200)
    every = source_image_classes(source)
    assert "c1-000" in source.class_index[1]  # the image with a sliver of novel class 4 exists...
    used = load_episodes(path).keys()
    assert "c1-000" not in used  # ...and is never used, though the sliver is below the 2x32x32 rule
    for key in used:
        assert not (every[key] & set(NOVEL)), key
    assert {e.cls for e in es.episodes} <= set(BASE)


def test_training_episodes_are_a_function_of_their_index_and_avoid_novel_images(source):
    s = TrainEpisodeSampler(source.class_index, benchmark="embedded", fold=0, shots=1, seed=321, base=BASE, novel=NOVEL, image_classes=source_image_classes(source))
    assert [s(i) for i in range(20)] == [s(i) for i in range(20)]
    assert all(e.cls in BASE and "c1-000" not in (e.query, *e.supports) for e in (s(i) for i in range(100)))


def test_too_few_images_for_the_shots_is_a_clear_error(source):
    with pytest.raises(DataError, match="6 or more images"):
        build_episodes({4: ["a", "b"]}, benchmark="embedded", fold=0, mode="test", shots=5, base=BASE, novel=NOVEL)


def test_fss_episodes_visit_each_query_image_once_before_repeating(tmp_path):
    index = {c: [f"fss{c}-{i}" for i in range(10)] for c in (101, 102, 103)}
    es = build_episodes(index, benchmark="fss", fold=0, mode="test", shots=5, n_episodes=30, seed=321, base=[1], novel=[101, 102, 103])
    assert sorted(e.query for e in es.episodes) == sorted(k for ks in index.values() for k in ks)
    assert all(e.query not in e.supports and len(e.supports) == 5 for e in es.episodes)


def test_episode_file_name_says_its_parameters(tmp_path):
    p = episode_file(tmp_path, "coco", 2, "test", 5, 321, 1000)
    assert p.name == "coco-fold2-test-5shot-seed321-n1000.json"


# -- transforms ------------------------------------------------------------------------------
def test_test_resize_follows_pfenet_longest_side_floor8_and_pads_with_zero_and_255():
    img = np.full((480, 640, 3), 200, np.uint8)
    lab = np.ones((480, 640), np.uint8)
    assert resized_hw(480, 640, 473) == (352, 472)  # int(480*473/640)=354 -> 352; 473 -> 472
    x, y, info = eval_resize(img, lab, 473)
    assert x.shape == (3, 473, 473) and y.shape == (473, 473)
    assert info.new_hw == (352, 472)
    assert float(x[:, 400:, :].abs().sum()) == 0.0
    assert (y[352:, :] == 255).all() and (y[:, 472:] == 255).all() and (y[:352, :472] == 1).all()


def test_to_original_puts_a_prediction_back_on_the_label_grid():
    lab = np.zeros((60, 100), np.uint8)
    lab[:, 50:] = 1  # right half is the object
    _, sq, info = eval_resize(np.zeros((60, 100, 3), np.uint8), lab, 64)
    logits = torch.stack([(sq != 1).float(), (sq == 1).float()])[None]  # a perfect prediction on the square
    pred = to_original(logits, info).argmax(1)[0]
    assert pred.shape == (60, 100)
    assert (pred.numpy() == lab).mean() > 0.98


def test_train_augment_is_deterministic_per_rng_and_keeps_most_of_the_object():
    img = np.zeros((80, 120, 3), np.uint8)
    lab = np.zeros((80, 120), np.uint8)
    lab[20:60, 30:90] = 1
    a = train_augment(img, lab, 64, np.random.default_rng(5))
    b = train_augment(img, lab, 64, np.random.default_rng(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 64, 64) and a[1].shape == (64, 64)
    assert int((a[1] == 1).sum()) > 0
