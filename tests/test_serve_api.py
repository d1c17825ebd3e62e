"""The OpenAI-compatible API, driven with the official openai client over a real loopback socket."""

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from serve_support import FakeEngine, chatty_llava, data_url, image, user_message, vlm  # noqa: F401, F811
from vlmforge.cli import main
from vlmforge.errors import ConfigError
from vlmforge.runtime import Conversation, SamplingParams
from vlmforge.serve.app import create_app
from vlmforge.serve.runner import ServerThread
from vlmforge.serve.settings import ServeSettings, check_bind

KEY = "test-key"
SETTINGS = ServeSettings(api_key=KEY, max_request_bytes=100_000, max_image_pixels=64 * 64, max_tokens_cap=64)


@pytest.fixture(scope="module")
def server(vlm):  # noqa: F811
    with ServerThread(create_app(vlm, SETTINGS, ui=False)) as running:
        yield running


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def _greedy(vlm, question, img, **kw):  # noqa: F811
    return vlm.generate([Conversation.single_turn(question, [img])], SamplingParams(max_new_tokens=12, **kw))[0]


def test_models_are_listed(client, vlm):  # noqa: F811
    assert [m.id for m in client.models.list()] == [vlm.name]


def test_chat_with_an_image_gives_the_runtime_greedy_answer(client, vlm):  # noqa: F811
    red = image((220, 30, 30))
    expected = _greedy(vlm, "what colour is it?", red)
    assert expected.text  # the test model says something, so equality below means something
    reply = client.chat.completions.create(
        model=vlm.name, messages=[user_message("what colour is it?", red)], temperature=0, max_tokens=12
    )
    assert reply.choices[0].message.content == expected.text
    assert reply.choices[0].finish_reason == expected.finish_reason
    assert reply.usage.prompt_tokens == expected.prompt_tokens
    assert reply.usage.completion_tokens == expected.completion_tokens


def test_streaming_concatenates_to_the_runtime_answer(client, vlm):  # noqa: F811
    blue = image((20, 40, 230), (24, 50))
    expected = _greedy(vlm, "describe the picture", blue)
    chunks = list(
        client.chat.completions.create(
            model=vlm.name,
            messages=[user_message("describe the picture", blue)],
            temperature=0,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # it really streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected.finish_reason
    assert chunks[-1].usage.prompt_tokens == expected.prompt_tokens


def test_stop_strings_cut_the_answer_in_both_modes(client, vlm):  # noqa: F811
    green = image((10, 200, 10))
    full = _greedy(vlm, "what is it?", green).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    expected = _greedy(vlm, "what is it?", green, stop=[stop])
    kwargs = {
        "model": vlm.name,
        "messages": [user_message("what is it?", green)],
        "temperature": 0,
        "max_tokens": 12,
        "stop": stop,
    }
    assert client.chat.completions.create(**kwargs).choices[0].message.content == expected.text
    streamed = client.chat.completions.create(stream=True, **kwargs)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == expected.text
    assert stop not in expected.text


def test_seeded_sampling_is_reproducible(client, vlm):  # noqa: F811
    kwargs = {
        "model": vlm.name,
        "messages": [user_message("hello", image((1, 2, 3)))],
        "temperature": 1.0,
        "top_p": 0.9,
        "max_tokens": 10,
        "seed": 7,
    }
    first = client.chat.completions.create(**kwargs).choices[0].message.content
    assert client.chat.completions.create(**kwargs).choices[0].message.content == first


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def _post(server, body, key=KEY, content=None):
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    return httpx.post(
        server.url + "/v1/chat/completions",
        headers=headers,
        timeout=30,
        **({"json": body} if body is not None else {"content": content}),
    )


def test_wrong_or_missing_key_is_401(server, vlm):  # noqa: F811
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    response = httpx.get(server.url + "/v1/models")
    assert response.status_code == 401 and _error(response)["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"  # health needs no key


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "hi"}]},  # no model
        {"model": "llava", "messages": []},
        {"model": "llava", "messages": [{"role": "robot", "content": "hi"}]},
        {"model": "llava", "messages": [{"role": "user", "content": [{"type": "video", "url": "x"}]}]},
        {"model": "llava", "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
        {"model": "llava", "messages": [{"role": "user", "content": "hi"}], "n": 2},
        {"model": "llava", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000},
        {
            "model": "llava",
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,not-base64!"}}],
                }
            ],
        },
        {
            "model": "llava",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"junk").decode()},
                        }
                    ],
                }
            ],
        },
    ],
)
def test_malformed_requests_are_400_in_openai_shape(server, vlm, body):  # noqa: F811
    if "model" in body:
        body = {**body, "model": vlm.name}
    response = _post(server, body)
    assert response.status_code == 400, response.text
    assert _error(response)["type"] == "invalid_request_error"


def test_invalid_json_is_400(server):
    response = _post(server, None, content=b'{"model": ')
    assert response.status_code == 400 and _error(response)


def test_remote_and_local_image_urls_are_refused(client, vlm, tmp_path):  # noqa: F811
    path = tmp_path / "x.png"
    image((1, 1, 1)).save(path)
    for url in ("http://127.0.0.1:1/cat.png", "https://example.com/cat.png", f"file://{path}"):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(
                model=vlm.name,
                max_tokens=4,
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
            )
        assert err.value.body["code"] == "image_url_refused"


def test_too_large_requests_are_413(server, client, vlm):  # noqa: F811
    response = _post(server, {"model": vlm.name, "messages": [{"role": "user", "content": "x" * 200_000}]})
    assert response.status_code == 413 and _error(response)["code"] == "request_too_large"
    chunked = httpx.post(
        server.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {KEY}"},
        content=iter([b"{" + b" " * 60_000] * 2),
    )  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413
    # a small file that decodes to many pixels (decompression bomb) is refused before decoding
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 2000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 50_000
    bomb = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model=vlm.name,
            max_tokens=4,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": bomb}}]}],
        )
    assert err.value.status_code == 413 and err.value.body["code"] == "image_too_large"


def test_unknown_model_is_404_and_so_is_drawing_with_a_model_that_cannot(server, client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="cannot draw images"):  # a LLaVA model only reads images
        client.images.generate(prompt="a red circle")


def test_the_served_name_is_the_run_or_the_flag_in_the_api_and_the_ui():
    from fastapi.testclient import TestClient

    for settings, name in ((ServeSettings(), "fake"), (ServeSettings(served_model_name="bunny-seed0"), "bunny-seed0")):
        with TestClient(create_app(FakeEngine(), settings, ui=True)) as http:
            assert [m["id"] for m in http.get("/v1/models").json()["data"]] == [name]
            body = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            assert http.post("/v1/chat/completions", json=body).json()["model"] == name
            assert f"Chat with {name}" in http.get("/ui/config").text


def test_full_queue_is_503_and_the_server_recovers():
    engine = FakeEngine(block=True)
    app = create_app(engine, ServeSettings(max_batch_size=1, max_queue=1), ui=False)
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    with ServerThread(app) as running, httpx.Client(base_url=running.url, timeout=30) as http:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(http.post, "/v1/chat/completions", json=body)
            assert engine.started.wait(10)  # the first request is generating ...
            second = pool.submit(http.post, "/v1/chat/completions", json=body)
            while http.get("/health").json()["waiting"] < 1:  # ... and the second waits in the queue
                pass
            refused = http.post("/v1/chat/completions", json=body)
            assert refused.status_code == 503 and _error(refused)["code"] == "queue_full"
            engine.release.set()
            assert first.result().status_code == second.result().status_code == 200
        assert http.post("/v1/chat/completions", json=body).status_code == 200


def test_public_bind_without_key_is_refused(tiny_llava, capsys):
    with pytest.raises(ConfigError, match="API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "k")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    assert main(["serve", "--model", str(tiny_llava), "--host", "0.0.0.0", "--api-key", ""]) == 1
    assert "without an API key" in capsys.readouterr().err
