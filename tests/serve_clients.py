"""`runtime-cli serve` against clients nobody here wrote: huggingface_hub's InferenceClient (TEI's
protocol), the openai package (its default base64 embeddings), and requests with Presidio's
documented request bodies; then malformed requests, and the server still healthy after them.

Run by tests/serve_clients.sh (which `.ci/run` calls) as:
    python tests/serve_clients.py target/debug/runtime-cli
"""

import json
import math
import subprocess
import sys
import threading

import numpy as np
import requests
from huggingface_hub import InferenceClient
from openai import OpenAI

NOTE = "Mrs. Margaret O'Hara, 93, seen on 03/14/2024 at Lakeshore Hospital; call 218-555-0142."
SECRETS = ["Margaret", "O'Hara", "218-555-0142", "José", "Núñez"]


def start(binary):
    proc = subprocess.Popen(
        [binary, "serve", "--port", "0", "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = []
    ready = threading.Event()
    base = {}

    def read():
        for line in proc.stderr:
            log.append(line)
            if line.startswith("listening on "):
                base["url"] = line.split("listening on ", 1)[1].strip()
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not ready.wait(120):
        proc.kill()
        sys.exit("the server did not start:\n" + "".join(log))
    return proc, base["url"], log, reader


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main():
    binary = sys.argv[1]
    proc, base, log, reader = start(binary)
    checks = 0
    try:
        direct = requests.post(f"{base}/embed", json={"inputs": [NOTE]}, timeout=60)
        direct.raise_for_status()
        reference = direct.json()[0]

        # huggingface_hub speaks TEI's protocol: it posts to the base URL.
        hf = InferenceClient(base_url=base)
        vec = hf.feature_extraction(NOTE)
        assert isinstance(vec, np.ndarray), type(vec)
        assert cosine(vec, reference) >= 0.99999, cosine(vec, reference)
        checks += 1
        vec2 = hf.feature_extraction(NOTE, normalize=True, truncate=True)
        assert cosine(vec2, reference) >= 0.99999
        checks += 1

        # openai: base64 by default (decoded by the client), and floats when asked.
        oa = OpenAI(base_url=f"{base}/v1", api_key="not-needed")
        got = oa.embeddings.create(model="clinical-small", input=[NOTE, "Short note."])
        assert len(got.data) == 2 and got.data[1].index == 1
        assert cosine(got.data[0].embedding, reference) >= 0.99999
        assert got.usage.prompt_tokens > 0
        checks += 1
        floats = oa.embeddings.create(model="any-name", input=NOTE, encoding_format="float")
        assert cosine(floats.data[0].embedding, reference) >= 0.99999
        assert abs(math.fsum(x * x for x in floats.data[0].embedding) - 1.0) < 1e-4
        checks += 1
        try:
            oa.embeddings.create(model="m", input=NOTE, encoding_format="hex")
            raise AssertionError("encoding_format hex was accepted")
        except Exception as e:  # openai.UnprocessableEntityError
            assert getattr(e, "status_code", None) == 422, e
        checks += 1

        # Presidio's documented bodies, with requests.
        text = "Seen by Dr. José Núñez 😀 on 03/14/2021"
        r = requests.post(f"{base}/analyze", json={"text": text, "language": "en"}, timeout=60)
        r.raise_for_status()
        results = r.json()
        people = [text[x["start"]:x["end"]] for x in results if x["entity_type"] == "PERSON"]
        assert "José Núñez" in people, results  # Python str offsets: code points
        assert all({"entity_type", "start", "end", "score"} <= set(x) for x in results)
        checks += 1
        r = requests.post(
            f"{base}/analyze",
            json={"text": text, "language": "en", "entities": ["DATE_TIME"], "score_threshold": 0.4},
            timeout=60,
        )
        assert r.json() and all(x["entity_type"] == "DATE_TIME" for x in r.json()), r.text
        checks += 1
        body = {
            "text": "hello world, my name is Jane Doe. My number is: 034453334",
            "anonymizers": {
                "DEFAULT": {"type": "replace", "new_value": "ANONYMIZED"},
                "PHONE_NUMBER": {"type": "mask", "masking_char": "*", "chars_to_mask": 4, "from_end": True},
            },
            "analyzer_results": [
                {"start": 24, "end": 32, "score": 0.8, "entity_type": "NAME"},
                {"start": 24, "end": 28, "score": 0.8, "entity_type": "FIRST_NAME"},
                {"start": 29, "end": 32, "score": 0.6, "entity_type": "LAST_NAME"},
                {"start": 48, "end": 57, "score": 0.95, "entity_type": "PHONE_NUMBER"},
            ],
        }
        r = requests.post(f"{base}/anonymize", json=body, timeout=60)
        r.raise_for_status()
        # Presidio's own README gives this output for this request.
        assert r.json()["text"] == "hello world, my name is ANONYMIZED. My number is: 03445****", r.text
        checks += 1
        ents = requests.get(f"{base}/supportedentities", params={"language": "en"}, timeout=60).json()
        assert "PERSON" in ents and "DATE_TIME" in ents, ents
        checks += 1

        # Malformed requests: each refused with a JSON error, none takes the server down.
        bad = [
            ("/embed", b"{not json", 400),
            ("/embed", json.dumps({"inputs": 3}).encode(), 422),
            ("/embed", json.dumps({"inputs": ""}).encode(), 400),
            ("/v1/embeddings", json.dumps({"model": "m"}).encode(), 422),
            ("/analyze", json.dumps({"text": "x", "language": 7}).encode(), 422),
            ("/anonymize", b"\xff\xfe", 400),
            ("/nowhere", b"{}", 404),
        ]
        for path, data, status in bad:
            r = requests.post(f"{base}{path}", data=data, headers={"content-type": "application/json"}, timeout=60)
            assert r.status_code == status, (path, data, r.status_code, r.text)
            assert "error" in r.json(), r.text
        checks += 1
        assert requests.get(f"{base}/health", timeout=60).status_code == 200
        metrics = requests.get(f"{base}/metrics", timeout=60).text
        assert 'serve_requests_total{route="/v1/embeddings",status="200"}' in metrics, metrics
        checks += 1
    finally:
        proc.terminate()
        proc.wait(60)
        reader.join(10)  # every line read before the log is checked
    text_log = "".join(log)
    leaked = [s for s in SECRETS if s in text_log]
    assert not leaked, f"note text in the server's log: {leaked}"
    assert "stopped" in text_log, text_log
    print(f"serve clients: {checks} checks passed (huggingface_hub, openai, requests/Presidio)")


if __name__ == "__main__":
    main()
