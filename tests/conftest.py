import os

import torch

# Tiny models run fastest single-threaded, and on a 2-core machine two torch threads fight with
# pytest and the tokenizer; the few tests on the real embedded model are slower this way but
# still seconds. Override with GRASP_LORA_TEST_THREADS.
torch.set_num_threads(int(os.environ.get("GRASP_LORA_TEST_THREADS", "1")))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
