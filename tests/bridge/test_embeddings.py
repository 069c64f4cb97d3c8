"""POST /v1/embeddings through aiohttp's test client on the fake core."""

from __future__ import annotations

import base64
import struct

import grpc
from aiohttp.test_utils import TestClient
from minerva.v1 import inference_pb2

from tests.bridge.conftest import MODEL_ID, FakeCore, rpc_error

URL = "/v1/embeddings"


async def test_float_embeddings_of_several_inputs(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(URL, json={"model": MODEL_ID, "input": ["a", "b"]})
    assert response.status == 200
    data = await response.json()
    assert data["object"] == "list"
    assert data["model"] == MODEL_ID
    assert [(d["object"], d["index"], d["embedding"]) for d in data["data"]] == [
        ("embedding", 0, [0.5, -0.25, 1.0]),
        ("embedding", 1, [0.5, -0.25, 1.0]),
    ]
    assert data["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    sent = core.inference.requests[0]
    assert isinstance(sent, inference_pb2.EmbedRequest)
    assert [i.text for i in sent.inputs] == ["a", "b"]


async def test_base64_embeddings_decode_to_the_float_vector(bridge: TestClient) -> None:
    response = await bridge.post(
        URL, json={"model": MODEL_ID, "input": "a", "encoding_format": "base64"}
    )
    encoded = (await response.json())["data"][0]["embedding"]
    assert list(struct.unpack("<3f", base64.b64decode(encoded))) == [0.5, -0.25, 1.0]


async def test_token_id_inputs(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(URL, json={"model": MODEL_ID, "input": [[1, 2], [3]]})
    assert response.status == 200
    assert [list(i.token_ids.ids) for i in core.inference.requests[0].inputs] == [[1, 2], [3]]


async def test_embed_error_maps_param_to_input(bridge: TestClient, core: FakeCore) -> None:
    core.inference.embed_result = rpc_error(
        grpc.StatusCode.INVALID_ARGUMENT, "input 1 is longer than the context", "inputs"
    )
    response = await bridge.post(URL, json={"model": MODEL_ID, "input": ["a", "b"]})
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["param"], error["message"]) == ("input", "input 1 is longer than the context")


async def test_dimensions_is_refused(bridge: TestClient, core: FakeCore) -> None:
    response = await bridge.post(URL, json={"model": MODEL_ID, "input": "a", "dimensions": 8})
    assert response.status == 400
    assert (await response.json())["error"]["param"] == "dimensions"
    assert core.inference.requests == []
