"""Text-layer tests run offline: no hub, no network (set before transformers / huggingface_hub are imported)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
