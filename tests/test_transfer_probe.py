"""The cross-modal transfer probe: labels from scene annotations, a probe that transfers only when the text-side
vectors live where the image-side ones do, and statements that follow the numbers."""

from __future__ import annotations

import json

import pytest
import torch

from vlmforge.errors import DataError
from vlmforge.shapes.foundation.corpus import read_scenes
from vlmforge.shapes.lab.transfer_probe import (
    ATTRIBUTES,
    SCENE_FIELDS,
    balanced_accuracy,
    gain_share,
    label_vocabulary,
    probe_statements,
    scene_labels,
    transfer_probe,
)

COLORS, SHAPES = ("red", "green", "blue"), ("circle", "square", "star")


def random_scenes(n: int, seed: int) -> dict[str, list[dict]]:
    g = torch.Generator().manual_seed(seed)
    scenes = {}
    for i in range(n):
        k = int(torch.randint(1, 4, (1,), generator=g))
        scenes[f"s{seed}-{i}"] = [
            {"color": COLORS[int(torch.randint(3, (1,), generator=g))],
             "shape": SHAPES[int(torch.randint(3, (1,), generator=g))]}
            for _ in range(k)
        ]  # fmt: skip
    return scenes


def test_labels_are_read_from_the_scene_annotations():
    scenes = {"a": [{"color": "red", "shape": "star", "position": "left"}, {"color": "blue", "shape": "star", "position": "top"}],
              "b": [{"color": "green", "shape": "circle", "position": "left"}]}  # fmt: skip
    vocab = label_vocabulary(scenes)
    assert vocab == {"count": [1, 2], "colors": ["blue", "green", "red"], "shapes": ["circle", "star"],
                     "objects": ["blue star", "green circle", "red star"], "positions": ["left", "top"]}  # fmt: skip
    labels = scene_labels(scenes, ["b", "a"], vocab)
    assert labels.count.tolist() == [0, 1]
    assert labels.colors.tolist() == [[0, 1, 0], [1, 0, 1]]
    assert labels.shapes.tolist() == [[1, 0], [0, 1]]
    assert labels.objects.tolist() == [[0, 1, 0], [1, 0, 1]]
    assert labels.positions.tolist() == [[1, 0], [1, 1]]
    unseen = scene_labels({"c": [{"color": "red", "shape": "star"}] * 3}, ["c"], vocab)
    assert unseen.count.tolist() == [-100]  # a count never seen in training cannot be predicted


def test_a_bad_scene_record_names_its_line_and_a_missing_file_says_what_it_wanted(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "scenes.jsonl").write_text(
        json.dumps({"id": "a", "objects": []}) + "\n" + json.dumps({"id": "b", "objects": [{"color": "red"}]}) + "\n"
    )
    with pytest.raises(DataError, match=r"scenes.jsonl:2"):
        read_scenes(tmp_path, "train", required=SCENE_FIELDS)
    with pytest.raises(DataError, match="shapes-world folder"):
        read_scenes(tmp_path, "test", required=SCENE_FIELDS)


def encode(labels, basis: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """Vectors that carry the attributes linearly (one basis row per label value) plus noise."""
    g = torch.Generator().manual_seed(seed)
    count = torch.nn.functional.one_hot(labels.count, 3).float()
    features = torch.cat([count, labels.colors, labels.shapes, labels.objects], dim=1)
    return features @ basis + noise * torch.randn(len(features), basis.shape[1], generator=g)


def test_the_probe_transfers_only_from_vectors_in_the_image_space():
    train_scenes, test_scenes = random_scenes(600, 0), random_scenes(200, 1)
    vocab = label_vocabulary(train_scenes)
    train, test = (
        scene_labels(train_scenes, list(train_scenes), vocab),
        scene_labels(test_scenes, list(test_scenes), vocab),
    )
    g = torch.Generator().manual_seed(2)
    basis, other = torch.randn(18, 32, generator=g), torch.randn(18, 32, generator=g)
    gap = 3.0 * torch.randn(32, generator=g)
    image_train, image_test = encode(train, basis, 0.3, 3), encode(test, basis, 0.3, 4)
    text = encode(train, basis, 0.3, 5) + gap
    result = transfer_probe(
        {"image": image_train, "shifted": text - text.mean(0) + image_train.mean(0), "unrelated": encode(train, other, 0.3, 6)},
        {"image": image_test, "shifted": image_test, "unrelated": image_test},
        train, test,
    )  # fmt: skip
    acc, majority = result["accuracy"], result["majority"]
    assert result["mean_shift_minus_none_se"] == {}  # no mean_shift / none sources here
    assert all(0.0 < result["se"]["unrelated"][a] < 0.1 for a in majority)  # bootstrap over 200 test images
    assert result["train"] == 600 and result["test"] == 200
    assert list(result["majority"]) == [a for a in ATTRIBUTES if a != "positions"]  # these scenes have no positions
    for attr in result["majority"]:
        assert acc["image"][attr] > majority[attr] + 0.15, attr  # the attributes are linearly there
        # text vectors moved onto the image statistics transfer; a different encoding of the same facts does not
        assert gain_share(acc["shifted"][attr], acc["image"][attr], majority[attr]) > 0.9, attr
        assert gain_share(acc["unrelated"][attr], acc["image"][attr], majority[attr]) < 0.5, attr


def test_balanced_accuracy_weighs_rare_labels_like_common_ones():
    truth = torch.tensor([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 1, 1]]).float()
    predicted = torch.tensor([[1, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 1]]).bool()
    # label 0: TPR 1, TNR 1; label 1: TPR 0, TNR 1; label 2 has no negative and is left out
    assert balanced_accuracy(predicted, truth) == pytest.approx((1.0 + 0.5) / 2)
    assert balanced_accuracy(torch.zeros_like(predicted), truth) == pytest.approx(0.5)  # "absent" everywhere


def test_statements_follow_the_numbers():
    probe = {
        "train": 10, "test": 5, "majority": {"count": 0.5, "colors": 0.6, "shapes": 0.6},
        "mean_shift_minus_none_se": {"count": 0.1, "colors": 0.15, "shapes": 0.01},
        "accuracy": {
            "image": {"count": 0.9, "colors": 1.0, "shapes": 0.6},
            "none": {"count": 0.5, "colors": 0.7, "shapes": 0.6},
            "mean_shift": {"count": 0.88, "colors": 0.9, "shapes": 0.6},
        },
    }  # fmt: skip
    text = " ".join(probe_statements(probe))
    assert "baseline by 0.05 or more on count, colors (" in text and "does not carry shapes" in text
    assert (
        "(none), scored on real images: it keeps >= 90% of the image probe's gain over the majority baseline on 0 of 2"
        in text
    )
    assert (
        "(mean_shift), scored on real images: it keeps >= 90% of the image probe's gain over the majority baseline on 1 of 2 attributes (count)"
        in text
    )
    assert "colors 0.900 (75% of the gain)" in text  # (0.9 - 0.6) / (1.0 - 0.6)
    # count +0.38 > 2 x 0.1; colors +0.2 < 2 x 0.15; shapes +0.0
    assert "higher by more than 2 paired standard errors on count and lower on no attribute" in text
    assert "colors +0.200 (SE 0.150)" in text
