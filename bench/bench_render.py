"""Benchmark of --render: drawing time of the flagged paths of real-sized models (a script, not a test).

    python bench/bench_render.py            # SVG and PNG for every case
    python bench/bench_render.py --svg-only

Cases: BertModel with 12 and 48 layers whose loss ignores the pooler (GC102), GPT-2 with 48
layers whose first 24 blocks run under torch.no_grad() (GC103 on half the model), and a
ResNet-50-sized CNN (transformers ResNetModel, depths [3, 4, 6, 3]) whose second stage's
output is detached. Models are built from tiny-width configs on the meta device path of
graphcheck; only drawing is timed here ("check" is shown for scale). Target: < 5 s per SVG.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402

from graphcheck.checker import check  # noqa: E402
from graphcheck.drawing import plan, render_one  # noqa: E402


def bert(layers: int):
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                     intermediate_size=37, vocab_size=100, max_position_embeddings=64)
    return transformers.BertModel(config), (torch.randint(0, 100, (2, 8)),)


def sequence_loss(output):
    return output.last_hidden_state.sum()   # the pooler is never trained


def gpt2_half_frozen(layers: int = 48):
    config = transformers.GPT2Config(n_embd=32, n_layer=layers, n_head=2, vocab_size=100, n_positions=64,
                                     use_cache=False)
    model = transformers.GPT2Model(config)
    for block in model.h[: layers // 2]:
        forward = block.forward

        def frozen(*args, _forward=forward, **kwargs):
            with torch.no_grad():
                return _forward(*args, **kwargs)

        block.forward = frozen
    return model, (torch.randint(0, 100, (2, 8)),)


def hidden_loss(output):
    return output.last_hidden_state.sum()


def resnet50_detached():
    config = transformers.ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[32, 64, 128, 256], embedding_size=16,
                                       layer_type="bottleneck")
    model = transformers.ResNetModel(config)
    model.encoder.stages[1].register_forward_hook(lambda module, args, output: output.detach())
    return model, (torch.randn(1, 3, 64, 64),)


def pooled_loss(output):
    return output.pooler_output.sum()


CASES = [
    ("BERT 12 layers, pooler ignored", lambda: bert(12), sequence_loss),
    ("BERT 48 layers, pooler ignored", lambda: bert(48), sequence_loss),
    ("GPT-2 48 layers, 24 under no_grad", gpt2_half_frozen, hidden_loss),
    ("ResNet-50 (3,4,6,3), stage 2 detached", resnet50_detached, pooled_loss),
]


def main() -> None:
    formats = [".svg"] if "--svg-only" in sys.argv else [".svg", ".png"]
    header = f"{'case':40} {'nodes':>6} {'find.':>5} {'drawn':>5} {'check s':>8} " + \
        " ".join(f"{fmt[1:] + ' s':>7}" for fmt in formats)
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as directory:
        for name, build, loss in CASES:
            model, inputs = build()
            started = time.perf_counter()
            result = check(model, inputs, loss=loss, name=name)
            checked = time.perf_counter() - started
            if result.status != "ok":
                print(f"{name:40} error: {result.error}")
                continue
            drawn = len(plan(result).elements)
            times = []
            for fmt in formats:
                started = time.perf_counter()
                rendered = render_one(result, Path(directory) / f"case{fmt}")
                times.append(time.perf_counter() - started)
                if not rendered.image:
                    print(f"  {rendered.message}")
            print(f"{name:40} {len(result.graph.graph):6d} {len(result.findings):5d} {drawn:5d} {checked:8.1f} "
                  + " ".join(f"{t:7.2f}" for t in times))


if __name__ == "__main__":
    main()
