"""The models of bench/run.py, as graphcheck factories (no weights are downloaded).

    graphcheck bench/models.py:bert_base --loss bench/models.py:classification_loss
    graphcheck bench/models.py:llama_70b --meta --loss bench/models.py:next_token_loss

Every factory returns ``(model, example_inputs)``; the inputs are created inside the
factory, so under graphcheck's ``--meta`` (``torch.device("meta")``) they are meta tensors
too. ``MODELS`` maps the short names of ``bench/run.py --models`` to (factory, loss).
"""

from __future__ import annotations

import os

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --------------------------------------------------------------------------- factories

def bert_base():
    """BERT-base (12 layers, hidden 768, vocab 30522) with a 2-label classification head; 2x128 token ids."""
    from transformers import BertConfig, BertForSequenceClassification
    config = BertConfig(num_labels=2)   # the defaults are bert-base-uncased's architecture
    model = BertForSequenceClassification(config)
    return model, (torch.randint(0, config.vocab_size, (2, 128)),)


def resnet50():
    """ResNet-50 (bottleneck blocks 3-4-6-3, 1000 classes) from transformers; 2x3x224x224."""
    from transformers import ResNetConfig, ResNetForImageClassification
    config = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
                          num_labels=1000)
    model = ResNetForImageClassification(config)
    return model, (torch.randn(2, 3, 224, 224),)


def _llama(hidden, layers, heads, kv_heads, intermediate, vocab=32000, tokens=128, use_cache=False):
    from transformers import LlamaConfig, LlamaForCausalLM
    # use_cache=False as in examples/llama.py (training never needs the KV cache).
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=intermediate,
                         vocab_size=vocab, use_cache=use_cache)
    model = LlamaForCausalLM(config)
    return model, (torch.randint(0, vocab, (1, tokens)),)


def llama_7b():
    """Llama-2-7B architecture (32 layers, hidden 4096); 1x128 token ids."""
    return _llama(4096, 32, 32, 32, 11008)


def llama_7b_cache():
    """llama_7b with transformers' default use_cache=True: the output holds a DynamicCache (not in MODELS)."""
    return _llama(4096, 32, 32, 32, 11008, use_cache=True)


def llama_70b():
    """Llama-2-70B architecture (80 layers, hidden 8192, 8 KV heads); 1x128 token ids."""
    return _llama(8192, 80, 64, 8, 28672)


class SmallCNN(nn.Module):
    """A CIFAR-sized CNN: two conv blocks and a linear classifier."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 8 * 8, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def small_cnn():
    """SmallCNN on 2x3x32x32."""
    return SmallCNN(), (torch.randn(2, 3, 32, 32),)


def gpt2_48():
    """A 48-layer GPT-2 decoder of small width (n_embd 256, 4 heads, GPT-2 vocabulary); 1x128 token ids."""
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(n_embd=256, n_layer=48, n_head=4, use_cache=False)
    model = GPT2LMHeadModel(config)
    return model, (torch.randint(0, config.vocab_size, (1, 128)),)


# --------------------------------------------------------------------------- losses

def _logits(output):
    return output.logits if hasattr(output, "logits") else output


def classification_loss(output):
    """Cross-entropy of (batch, classes) logits against class 0."""
    logits = _logits(output)
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return nn.functional.cross_entropy(logits, targets)


def next_token_loss(output):
    """Cross-entropy of (batch, tokens, vocab) logits against token 0 everywhere."""
    logits = _logits(output)
    targets = torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device)
    return nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


# name -> (factory, loss, real weights fit in memory on a 24 GiB machine)
MODELS = {
    "bert": ("bert_base", "classification_loss", True),
    "resnet50": ("resnet50", "classification_loss", True),
    "llama7b": ("llama_7b", "next_token_loss", False),
    "llama70b": ("llama_70b", "next_token_loss", False),
    "cnn": ("small_cnn", "classification_loss", True),
    "gpt2_48": ("gpt2_48", "next_token_loss", True),
}
