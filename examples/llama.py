"""Llama architectures of several sizes from transformers (no weights are downloaded).

    graphcheck examples/llama.py:llama_7b --meta --loss examples/llama.py:next_token_loss
"""

import os

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _llama(hidden, layers, heads, kv_heads, intermediate, vocab=32000):
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=intermediate,
                         vocab_size=vocab, use_cache=False)
    model = LlamaForCausalLM(config)
    return model, (torch.randint(0, vocab, (1, 16)),)


def llama_tiny():
    return _llama(64, 2, 4, 2, 128, vocab=1000)


def llama_7b():
    return _llama(4096, 32, 32, 32, 11008)


def llama_70b():
    return _llama(8192, 80, 64, 8, 28672)


def next_token_loss(output):
    logits = output.logits
    targets = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
