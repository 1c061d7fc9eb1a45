import os

import pytest
import torch

# Tiny models run fastest single-threaded, and on a 2-core machine two torch threads fight with
# pytest and the tokenizer; the few tests on the real embedded model are slower this way but
# still seconds. Override with GRASP_LORA_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("GRASP_LORA_TEST_THREADS", "1")))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two stage-1-like PEFT LoRA folders (source, target) on tiny-llama, different random factors."""
    from helpers import make_adapter

    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(root / "en", 1), make_adapter(root / "ar", 2)]
