"""A catalogue of real models written by others (Hugging Face transformers, small configs).

Each ``Case`` builds a model from a tiny config (hidden 16-64, 1-2 layers, small vocab;
nothing is downloaded), gives example inputs and the loss to analyse, and says what the
GC1xx verdict must be: ``expected`` maps a rule code to ``fnmatch`` patterns of the
parameters it must report (empty for a healthy model). Bug cases wrap the library models
in small modules defined here; the lines a finding must point to carry a trailing
``# [rule-name]`` marker, as in ``fixtures/``.

The same factories serve the tests (tests/test_real_models.py), the benchmark
(bench/bench_real_models.py) and the command line (``graphcheck tests/real_models.py:bert_pooler_unused
--loss tests/real_models.py:last_hidden_state_loss``).
"""

from __future__ import annotations

import fnmatch
import inspect
import os
import re
from dataclasses import dataclass, field
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # build from configs only, never download

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils import _pytree as pytree  # noqa: E402

BATCH, SEQ, VOCAB = 2, 8, 128


# --------------------------------------------------------------------------- inputs

def _ids(seed: int = 0, length: int = SEQ, vocab: int = VOCAB) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Start at 3 so no id is a special token (padding, eos) by accident.
    return torch.randint(3, vocab, (BATCH, length), generator=generator)


def _image(size: int = 32) -> torch.Tensor:
    return torch.randn(BATCH, 3, size, size, generator=torch.Generator().manual_seed(1))


def _audio(samples: int = 800) -> torch.Tensor:
    return torch.randn(BATCH, samples, generator=torch.Generator().manual_seed(2))


# --------------------------------------------------------------------------- losses

def float_outputs_loss(output) -> torch.Tensor:
    """Every floating-point tensor in the output (what DDP assumes); the default loss."""
    parts = [t.float().sum() for t in pytree.tree_leaves(output)
             if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    return torch.stack(parts).sum()


def logits_loss(output) -> torch.Tensor:
    """Cross-entropy of the task head's logits against a fixed target (class 0 / token 0)."""
    logits = output.logits if hasattr(output, "logits") else output
    flat = logits.reshape(-1, logits.shape[-1])
    return nn.functional.cross_entropy(flat, torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device))


def last_hidden_state_loss(output) -> torch.Tensor:
    """A loss on the sequence output only (the pooler of BertModel is left out)."""
    return output.last_hidden_state.pow(2).mean()


def first_hidden_layer_loss(output) -> torch.Tensor:
    """A loss on ``hidden_states[1]``: the output of the first encoder layer."""
    return output.hidden_states[1].pow(2).mean()


def encoder_only_loss(output) -> torch.Tensor:
    """A seq2seq model trained only through its encoder output."""
    return output.encoder_last_hidden_state.pow(2).mean()


def text_embeds_loss(output) -> torch.Tensor:
    """CLIP trained on its text embeddings only (the image tower and logit_scale are left out)."""
    return output.text_embeds.pow(2).mean()


def lm_logits_only_loss(output) -> torch.Tensor:
    """GPT2DoubleHeadsModel trained with the language-model head only."""
    return logits_loss(output.logits)


# --------------------------------------------------------------------------- configs

def _bert_config(**overrides):
    from transformers import BertConfig
    settings = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=64, num_labels=3)
    settings.update(overrides)
    return BertConfig(**settings)


def _wav2vec2_config(**overrides):
    from transformers import Wav2Vec2Config
    settings = dict(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                    num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layerdrop=0.0,
                    mask_time_prob=0.05, mask_time_length=4, mask_time_min_masks=2,
                    classifier_proj_size=16, num_labels=3)
    settings.update(overrides)
    return Wav2Vec2Config(**settings)


# --------------------------------------------------------------------------- healthy models

def bert_classifier():
    from transformers import BertForSequenceClassification
    return BertForSequenceClassification(_bert_config()), (_ids(),)


def distilbert_classifier():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    config = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                              max_position_embeddings=64, num_labels=3)
    return DistilBertForSequenceClassification(config), (_ids(),)


def roberta_classifier():
    from transformers import RobertaConfig, RobertaForSequenceClassification
    config = RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=64, num_labels=3)
    return RobertaForSequenceClassification(config), (_ids(),)


def gpt2_lm():
    from transformers import GPT2Config, GPT2LMHeadModel
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2, use_cache=False)
    return GPT2LMHeadModel(config), (_ids(),)


def llama_lm():
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         use_cache=False)
    return LlamaForCausalLM(config), (_ids(),)


def llama_lm_with_cache():
    """use_cache on: the output holds a DynamicCache, which torch.export cannot return."""
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         use_cache=True)
    return LlamaForCausalLM(config), (_ids(),)


def llama_lm_reentrant_checkpoint():
    """Gradient checkpointing the way many fine-tuning recipes set it (use_reentrant=True)."""
    model, inputs = llama_lm()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    return model, inputs


def mixtral_moe_lm():
    """A mixture of experts: top-2 routing over 4 experts, data-dependent dispatch."""
    from transformers import MixtralConfig, MixtralForCausalLM
    config = MixtralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=64, use_cache=False)
    return MixtralForCausalLM(config), (_ids(),)


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration
    config = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      decoder_start_token_id=0, use_cache=False)
    return T5ForConditionalGeneration(config)


def t5_seq2seq():
    # forward(input_ids, attention_mask, decoder_input_ids)
    return _t5(), (_ids(0), torch.ones(BATCH, SEQ, dtype=torch.long), _ids(1, length=5))


def vit_classifier():
    from transformers import ViTConfig, ViTForImageClassification
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=10)
    return ViTForImageClassification(config), (_image(),)


def convnext_classifier():
    from transformers import ConvNextConfig, ConvNextForImageClassification
    config = ConvNextConfig(num_channels=3, hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=10)
    return ConvNextForImageClassification(config), (_image(),)


def resnet_classifier():
    from transformers import ResNetConfig, ResNetForImageClassification
    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck",
                          num_labels=10)
    return ResNetForImageClassification(config), (_image(),)


def swin_classifier():
    from transformers import SwinConfig, SwinForImageClassification
    config = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                        window_size=4, num_labels=10)
    return SwinForImageClassification(config), (_image(),)


def deit_distilled():
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher
    config = DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=10)
    return DeiTForImageClassificationWithTeacher(config), (_image(),)


def vitmae_pretraining():
    """Masked autoencoder: random masking (argsort of noise), an encoder and a small decoder."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining
    config = ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                          decoder_num_attention_heads=2, decoder_intermediate_size=32)
    return ViTMAEForPreTraining(config), (_image(),)


def wav2vec2_classifier():
    from transformers import Wav2Vec2ForSequenceClassification
    return Wav2Vec2ForSequenceClassification(_wav2vec2_config()), (_audio(),)


def hubert_ctc():
    from transformers import HubertConfig, HubertForCTC
    config = HubertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8),
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, layerdrop=0.0,
                          mask_time_prob=0.05, mask_time_length=4, mask_time_min_masks=2)
    return HubertForCTC(config), (_audio(),)


def whisper_seq2seq():
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    config = WhisperConfig(vocab_size=VOCAB, num_mel_bins=8, encoder_layers=1, decoder_layers=1, d_model=32,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, max_source_positions=16, max_target_positions=32,
                           use_cache=False, decoder_start_token_id=1, pad_token_id=0)
    features = torch.randn(BATCH, 8, 32, generator=torch.Generator().manual_seed(3))
    # forward(input_features, attention_mask, decoder_input_ids)
    return WhisperForConditionalGeneration(config), (features, None, _ids(4, length=5))


def clip_dual_encoder():
    from transformers import CLIPConfig, CLIPModel
    config = CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    # forward(input_ids, pixel_values)
    return CLIPModel(config), (_ids(5), _image())


# --------------------------------------------------------------------------- bug cases

def bert_pooler_unused():
    """BertModel trained on last_hidden_state: the pooler never reaches the loss."""
    from transformers import BertModel
    return BertModel(_bert_config()), (_ids(),)


def bert_hidden_states():
    """A loss on hidden_states[1]: the second encoder layer (and the pooler) never reach it."""
    from transformers import BertModel
    return BertModel(_bert_config(output_hidden_states=True)), (_ids(),)


def gpt2_double_heads():
    """GPT2DoubleHeadsModel returns (logits, mc_logits); training only on logits leaves mc_head out."""
    from transformers import GPT2Config, GPT2DoubleHeadsModel
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2, use_cache=False)
    return GPT2DoubleHeadsModel(config), (_ids().unsqueeze(1),)


def t5_encoder_only():
    """T5ForConditionalGeneration trained only through encoder_last_hidden_state."""
    return t5_seq2seq()


class ContinuousFeaturesBert(nn.Module):
    """BERT over continuous features passed as inputs_embeds: the word embedding table never trains."""

    def __init__(self):
        super().__init__()
        from transformers import BertModel
        self.proj = nn.Linear(16, 32)
        self.bert = BertModel(_bert_config())
        self.head = nn.Linear(32, 3)

    def forward(self, features):
        return self.head(self.bert(inputs_embeds=self.proj(features)).pooler_output)


def bert_inputs_embeds():
    return ContinuousFeaturesBert(), (torch.randn(BATCH, SEQ, 16, generator=torch.Generator().manual_seed(6)),)


class FrozenBackboneByNoGrad(nn.Module):
    """A classifier on a BERT backbone run under no_grad by mistake."""

    def __init__(self):
        super().__init__()
        from transformers import BertModel
        self.backbone = BertModel(_bert_config(), add_pooling_layer=False)
        self.head = nn.Linear(32, 3)

    def forward(self, input_ids):
        with torch.no_grad():
            hidden = self.backbone(input_ids).last_hidden_state  # [detached-parameter]
        return self.head(hidden[:, 0])


def bert_no_grad_backbone():
    return FrozenBackboneByNoGrad(), (_ids(),)


class DetachedViTHead(nn.Module):
    """A ViT feature extractor whose features are detached before the head."""

    def __init__(self):
        super().__init__()
        from transformers import ViTConfig, ViTModel
        config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64)
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.head = nn.Linear(32, 10)

    def forward(self, pixel_values):
        features = self.vit(pixel_values).last_hidden_state[:, 0]
        return self.head(features.detach())  # [detached-parameter]


def vit_detached_head():
    return DetachedViTHead(), (_image(),)


class TagThenEncode(nn.Module):
    """A pipeline: a BERT tagger picks a tag per token (argmax), a DistilBERT reads the tags."""

    def __init__(self):
        super().__init__()
        from transformers import BertForTokenClassification, DistilBertConfig, DistilBertModel
        self.tagger = BertForTokenClassification(_bert_config(num_labels=5))
        self.tag_embedding = nn.Embedding(5, 32)
        self.encoder = DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=1, n_heads=2,
                                                        hidden_dim=64, max_position_embeddings=64))
        self.head = nn.Linear(32, 3)

    def forward(self, input_ids):
        tags = self.tagger(input_ids).logits.argmax(-1)  # [detached-parameter]
        embeds = self.encoder.embeddings.word_embeddings(input_ids) + self.tag_embedding(tags)
        hidden = self.encoder(inputs_embeds=embeds).last_hidden_state
        return self.head(hidden[:, 0])


def argmax_pipeline():
    return TagThenEncode(), (_ids(),)


class PredictedLengthMask(nn.Module):
    """A GPT-2 summariser that predicts how many tokens to keep: the count is cast with .long()."""

    def __init__(self):
        super().__init__()
        from transformers import GPT2Config, GPT2Model
        self.gpt2 = GPT2Model(GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                         use_cache=False))
        self.length_head = nn.Linear(32, 1)
        self.head = nn.Linear(32, 3)

    def forward(self, input_ids):
        hidden = self.gpt2(input_ids).last_hidden_state
        keep = (self.length_head(hidden[:, -1]).sigmoid() * hidden.shape[1]).long()  # [detached-parameter]
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        mask = (positions[None, :] < keep).to(hidden.dtype)
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.head(pooled)


def long_cast_length():
    return PredictedLengthMask(), (_ids(),)


def wav2vec2_eval_mode():
    """Analysed in eval mode: no SpecAugment masking, so masked_spec_embed is never read."""
    return wav2vec2_classifier()


def wav2vec2_feature_masking_only():
    """Train mode, time masking off (feature masking on): masked_spec_embed exists but is never read."""
    from transformers import Wav2Vec2ForSequenceClassification
    config = _wav2vec2_config(mask_time_prob=0.0, mask_feature_prob=0.2, mask_feature_length=4)
    return Wav2Vec2ForSequenceClassification(config), (_audio(),)


class FakeQuantLinear(nn.Linear):
    """An 8-bit fake-quantised linear layer without a straight-through estimator."""

    def forward(self, x):
        scale = self.weight.detach().abs().max().clamp(min=1e-8) / 127
        weight = torch.round(self.weight / scale) * scale  # [zero-gradient-parameter]
        return nn.functional.linear(x, weight, self.bias)


class NormalisedProjection(nn.Module):
    """A RoBERTa encoder with a hand-normalised projection head that reads the weights via .data."""

    def __init__(self):
        super().__init__()
        from transformers import RobertaConfig, RobertaModel
        config = RobertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64)
        self.encoder = RobertaModel(config, add_pooling_layer=False)
        self.proj = nn.Linear(32, 16)

    def forward(self, input_ids):
        hidden = self.encoder(input_ids).last_hidden_state[:, 0]
        weight = self.proj.weight.data / self.proj.weight.data.norm(dim=1, keepdim=True)  # [detached-parameter]
        return nn.functional.linear(hidden, weight) + self.proj.bias.data  # [detached-parameter]


def roberta_data_projection():
    return NormalisedProjection(), (_ids(),)


class CheckpointedFrozenEmbeddings(nn.Module):
    """Frozen BERT embeddings, then hand-rolled reentrant checkpointing of every encoder layer.

    The reentrant checkpoint's output requires grad only if one of its tensor inputs does;
    the frozen embeddings' output does not, so no encoder layer ever gets a gradient.
    """

    def __init__(self):
        super().__init__()
        from transformers import BertModel
        self.bert = BertModel(_bert_config(), add_pooling_layer=False)
        self.bert.embeddings.requires_grad_(False)
        self.head = nn.Linear(32, 3)

    def forward(self, input_ids):
        from torch.utils.checkpoint import checkpoint
        hidden = self.bert.embeddings(input_ids)
        for layer in self.bert.encoder.layer:
            hidden = checkpoint(layer, hidden, use_reentrant=True)  # [detached-parameter]
        return self.head(hidden[:, 0])


def bert_checkpoint_frozen_embeddings():
    return CheckpointedFrozenEmbeddings(), (_ids(),)


def quantized_classifier_head():
    """BertForSequenceClassification whose classifier weight is fake-quantised with torch.round."""
    model, inputs = bert_classifier()
    old = model.classifier
    model.classifier = FakeQuantLinear(old.in_features, old.out_features)
    return model, inputs


# --------------------------------------------------------------------------- the catalogue

@dataclass
class Case:
    name: str
    build: Callable[[], tuple[nn.Module, tuple]]
    modality: str
    loss: Callable | None = None            # None: every floating-point output (graphcheck's default)
    expected: dict[str, list[str]] = field(default_factory=dict)   # code -> fnmatch patterns
    mode: str = "train"
    wrapper: type | None = None             # class whose `# [rule]` markers findings must point to
    bug: str = ""                           # what the bug is (for docs/real-models.md)

    @property
    def healthy(self) -> bool:
        return not self.expected

    def expected_parameters(self, names) -> dict[str, set[str]]:
        return {code: {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
                for code, patterns in self.expected.items()}

    def markers(self) -> set[tuple[int, str]]:
        """(line, rule-name) of every `# [rule-name]` marker in the wrapper class's source."""
        if self.wrapper is None:
            return set()
        lines, start = inspect.getsourcelines(self.wrapper)
        found = set()
        for offset, text in enumerate(lines):
            for rule in re.findall(r"#.*\[([a-z0-9-]+)\]\s*$", text):
                found.add((start + offset, rule))
        return found


HEALTHY = [
    Case("bert-seqcls", bert_classifier, "text", loss=logits_loss),
    Case("distilbert-seqcls", distilbert_classifier, "text", loss=logits_loss),
    Case("roberta-seqcls", roberta_classifier, "text", loss=logits_loss),
    Case("gpt2-lm", gpt2_lm, "text", loss=logits_loss),
    Case("llama-lm", llama_lm, "text", loss=logits_loss),
    Case("llama-lm-cache", llama_lm_with_cache, "text", loss=logits_loss),
    Case("llama-lm-reentrant-checkpoint", llama_lm_reentrant_checkpoint, "text", loss=logits_loss),
    Case("mixtral-moe-lm", mixtral_moe_lm, "text", loss=logits_loss),
    Case("t5-seq2seq", t5_seq2seq, "text", loss=logits_loss),
    Case("vit-cls", vit_classifier, "vision", loss=logits_loss),
    Case("convnext-cls", convnext_classifier, "vision", loss=logits_loss),
    Case("resnet-cls", resnet_classifier, "vision", loss=logits_loss),
    Case("swin-cls", swin_classifier, "vision", loss=logits_loss),
    Case("vitmae-pretraining", vitmae_pretraining, "vision", loss=float_outputs_loss),
    Case("deit-distilled", deit_distilled, "vision"),
    Case("wav2vec2-seqcls", wav2vec2_classifier, "audio", loss=logits_loss),
    Case("hubert-ctc", hubert_ctc, "audio", loss=logits_loss),
    Case("whisper-seq2seq", whisper_seq2seq, "audio", loss=logits_loss),
    Case("clip", clip_dual_encoder, "multimodal"),
]

BUGS = [
    Case("bert-pooler-unused", bert_pooler_unused, "text", loss=last_hidden_state_loss,
         expected={"GC102": ["pooler.*"]}, bug="BertModel, loss on last_hidden_state only"),
    Case("bert-hidden-states", bert_hidden_states, "text", loss=first_hidden_layer_loss,
         expected={"GC102": ["encoder.layer.1.*", "pooler.*"]},
         bug="output_hidden_states=True, loss on hidden_states[1]"),
    Case("gpt2-double-heads", gpt2_double_heads, "text", loss=lm_logits_only_loss,
         expected={"GC102": ["multiple_choice_head.*"]}, bug="two-output model, loss on one output"),
    Case("t5-encoder-only", t5_encoder_only, "text", loss=encoder_only_loss,
         expected={"GC102": ["decoder.*"]}, bug="seq2seq model, loss on the encoder output"),
    Case("clip-text-only", clip_dual_encoder, "multimodal", loss=text_embeds_loss,
         expected={"GC102": ["vision_model.*", "visual_projection.*", "logit_scale"]},
         bug="dual encoder, loss on the text embeddings only"),
    Case("bert-inputs-embeds", bert_inputs_embeds, "text", loss=logits_loss,
         expected={"GC101": ["bert.embeddings.word_embeddings.weight"]},
         bug="inputs_embeds given: the word embedding table is never read"),
    Case("bert-no-grad-backbone", bert_no_grad_backbone, "text", loss=logits_loss,
         expected={"GC103": ["backbone.*"]}, wrapper=FrozenBackboneByNoGrad,
         bug="torch.no_grad() around the backbone"),
    Case("vit-detached-head", vit_detached_head, "vision", loss=logits_loss,
         expected={"GC103": ["vit.*"]}, wrapper=DetachedViTHead, bug=".detach() before the head"),
    Case("argmax-pipeline", argmax_pipeline, "text", loss=logits_loss,
         expected={"GC103": ["tagger.*"]}, wrapper=TagThenEncode, bug="argmax feeds a second model"),
    Case("long-cast-length", long_cast_length, "text", loss=logits_loss,
         expected={"GC103": ["length_head.*"]}, wrapper=PredictedLengthMask, bug=".long() feeds a mask"),
    Case("roberta-data-head", roberta_data_projection, "text", loss=float_outputs_loss,
         expected={"GC103": ["proj.*"]}, wrapper=NormalisedProjection, bug="weights read through .data"),
    Case("bert-checkpoint-frozen-embeddings", bert_checkpoint_frozen_embeddings, "text", loss=logits_loss,
         expected={"GC103": ["bert.encoder.*"]}, wrapper=CheckpointedFrozenEmbeddings,
         bug="reentrant checkpoint whose inputs do not require grad"),
    Case("wav2vec2-eval-mode", wav2vec2_eval_mode, "audio", loss=logits_loss, mode="eval",
         expected={"GC101": ["wav2vec2.masked_spec_embed"]}, bug="masked_spec_embed in eval mode"),
    Case("wav2vec2-no-time-mask", wav2vec2_feature_masking_only, "audio", loss=logits_loss,
         expected={"GC101": ["wav2vec2.masked_spec_embed"]},
         bug="masked_spec_embed with mask_time_prob=0 (train mode)"),
    Case("bert-fake-quant", quantized_classifier_head, "text", loss=logits_loss,
         expected={"GC104": ["classifier.weight"]}, wrapper=FakeQuantLinear,
         bug="torch.round fake quantiser without STE"),
]

CASES = HEALTHY + BUGS
BY_NAME = {case.name: case for case in CASES}
