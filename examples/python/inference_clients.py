"""The Open Inference Protocol (KServe V2) clients of the model-serving world, against this service:
Triton's `tritonclient[http]` and the KServe SDK's `InferenceRESTClient`. Each checks health,
reads the model's metadata and prices two houses; the script prints what it got as one JSON
object (tests/api/web.rs runs it against the real server and checks the log).

    python inference_clients.py http://127.0.0.1:8000 [model]
"""

import asyncio
import json
import sys

import numpy as np
import tritonclient.http as triton
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

HOUSES = {"squareFeet": [1500.0, 2400.0], "bedrooms": [3, 4], "bathrooms": [2.0, 2.5]}


def with_triton(url: str, model: str) -> dict:
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model)
    metadata = client.get_model_metadata(model)
    inputs = []
    for tensor in metadata["inputs"]:
        if tensor["name"] not in HOUSES:
            continue  # optional features: the model imputes them
        dtype = np.int64 if tensor["datatype"] == "INT64" else np.float64
        values = np.array(HOUSES[tensor["name"]], dtype=dtype)
        infer_input = triton.InferInput(tensor["name"], list(values.shape), tensor["datatype"])
        # JSON tensors: the service does not take the binary tensor extension.
        infer_input.set_data_from_numpy(values, binary_data=False)
        inputs.append(infer_input)
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("price", "prediction_id")]
    result = client.infer(model, inputs, outputs=outputs, request_id="triton-1")
    ids = result.as_numpy("prediction_id")
    return {
        "server": client.get_server_metadata()["name"],
        "inputs": [t["name"] for t in metadata["inputs"]],
        "prices": result.as_numpy("price").tolist(),
        "ids": [i.decode() if isinstance(i, bytes) else str(i) for i in ids.tolist()],
        "request_id": result.get_response()["id"],
    }


async def with_kserve(url: str, model: str) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    try:
        assert await client.is_server_live(url) and await client.is_server_ready(url)
        assert await client.is_model_ready(url, model)
        inputs = [
            InferInput("squareFeet", [2], "FP64", HOUSES["squareFeet"]),
            InferInput("bedrooms", [2], "INT64", HOUSES["bedrooms"]),
            InferInput("bathrooms", [2], "FP64", HOUSES["bathrooms"]),
        ]
        response = await client.infer(url, InferRequest(model, inputs, request_id="kserve-1"), model_name=model)
        by_name = {o.name: o for o in response.outputs}
        return {
            "model": response.model_name,
            "version": response.model_version,
            "prices": [float(p) for p in by_name["price"].data],
            "ids": [str(i) for i in by_name["prediction_id"].data],
            "request_id": response.id,
        }
    finally:
        await client.close()


def main() -> None:
    url = sys.argv[1].rstrip("/")
    model = sys.argv[2] if len(sys.argv) > 2 else "three-input-boosting"
    print(json.dumps({"triton": with_triton(url, model), "kserve": asyncio.run(with_kserve(url, model))}))


if __name__ == "__main__":
    main()
