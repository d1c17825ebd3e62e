"""`/v1/images/generations`: a served unified model draws what its CFG sampler draws, and bad requests get
OpenAI-shaped errors."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_support import FakeEngine
from unified_helpers import save_unified_folder
from vlmforge.models.unified.chat_processor import image_tokenizer_of
from vlmforge.models.unified.generation import ImageSampling, generate_image_codes
from vlmforge.runtime import VisionLanguageModel
from vlmforge.serve.app import create_app
from vlmforge.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = save_unified_folder(tmp_path_factory.mktemp("unified_images") / "uni-draws", max_positions=48)
    vlm = VisionLanguageModel.from_pretrained(folder)
    with TestClient(create_app(vlm, ServeSettings(max_generated_images=3), ui=False)) as http:
        yield vlm, folder, http


def pixels(item: dict) -> list:
    image = Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    return [image.size, list(image.convert("RGB").getdata())]


def test_images_are_the_samplers_codes_decoded(served):
    vlm, folder, http = served
    body = {"model": vlm.name, "prompt": "a red circle", "n": 3, "cfg": 2.0, "top_k": 4, "seed": 5, "size": "8x8"}
    answer = http.post("/v1/images/generations", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    sampling = ImageSampling(cfg=2.0, temperature=1.0, top_k=4, seed=5)
    codes = generate_image_codes(vlm.model, vlm.tokenizer, ["a red circle"] * 3, sampling)
    expected = image_tokenizer_of(folder).decode(codes)
    assert [pixels(item) for item in data] == [[im.size, list(im.getdata())] for im in expected]
    assert len({tuple(row) for row in codes.tolist()}) > 1  # one batch, yet each image its own noise
    again = http.post("/v1/images/generations", json=dict(body, model=None, size="auto", response_format="b64_json"))
    assert again.json()["data"] == data  # the same seed draws the same images; model and size may be left out


@pytest.mark.parametrize(
    ("change", "status", "param", "code"),
    [
        ({"cfg": -1}, 400, "cfg", "invalid_request"),
        ({"n": 4}, 400, "n", "n_too_large"),
        ({"prompt": "red " * 60}, 400, "prompt", "context_length_exceeded"),
        ({"response_format": "url"}, 400, "response_format", None),
        ({"size": "1024x1024"}, 400, "size", None),
        ({"model": "other"}, 404, "model", "model_not_found"),
        ({"top_p": 0}, 400, "top_p", "invalid_request"),
        ({"prompt": "a <unconditional> circle"}, 400, "prompt", "invalid_request"),
    ],
)
def test_bad_requests_are_openai_shaped_errors(served, change, status, param, code):
    vlm, _, http = served
    answer = http.post("/v1/images/generations", json={"model": vlm.name, "prompt": "a red circle", **change})
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and error["code"] == code and error["message"]


def test_a_model_that_cannot_draw_says_so():
    with TestClient(create_app(FakeEngine(), ServeSettings(), ui=False)) as http:
        answer = http.post("/v1/images/generations", json={"prompt": "a red circle"})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_cannot_draw"
    assert "cannot draw images" in answer.json()["error"]["message"]


def test_the_official_client_draws(served):
    import openai

    from vlmforge.serve.runner import ServerThread

    vlm, _, _ = served
    with ServerThread(create_app(vlm, ServeSettings(), ui=False)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0)
        reply = client.images.generate(prompt="a red circle", n=2, response_format="b64_json",
                                       extra_body={"cfg": 3.0, "top_k": 4, "seed": 0})  # fmt: skip
        with pytest.raises(openai.BadRequestError, match="cfg"):
            client.images.generate(prompt="a red circle", extra_body={"cfg": -1})
    assert [pixels(item)[0] for item in reply.model_dump()["data"]] == [(8, 8), (8, 8)]
