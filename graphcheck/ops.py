"""Every op table: which op names belong to which family (zero-derivative, affine, sum-like, normalisation...).

Rules and analysis passes ask these tables, never their own lists, so a family means the
same thing everywhere. Names cover every frontend: fx module classes (``Linear``), torch
functions and methods (``linear``, ``__add__``) and aten ops from torch.export (``addmm``).
"""

from __future__ import annotations

import re

# Ops whose derivative is zero almost everywhere: a gradient through them is all zeros.
ZERO_DERIVATIVE_OPS = frozenset({
    "round", "floor", "ceil", "trunc", "fix", "sign", "sgn", "signbit",
    "round_", "floor_", "ceil_", "trunc_", "sign_",
})

# Ops whose output is zero wherever their (first) input is zero.
ZERO_PRESERVING = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "gelu", "silu", "tanh", "hardtanh", "elu", "selu",
    "celu", "mish", "hardswish", "softshrink", "hardshrink", "dropout", "dropout_", "alpha_dropout",
    "feature_alpha_dropout", "ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Tanh", "Hardtanh",
    "ELU", "SELU", "Mish", "Hardswish", "Dropout", "Dropout1d", "Dropout2d", "Identity",
    "view", "reshape", "_unsafe_view", "flatten", "unflatten", "permute", "transpose", "t",
    "squeeze", "unsqueeze", "expand", "expand_as", "view_as", "reshape_as", "contiguous",
    "clone", "getitem", "__getitem__", "select", "slice", "narrow", "to", "float", "half",
    "double", "bfloat16", "type_as", "neg", "__neg__", "sum", "mean", "max_pool1d", "max_pool2d",
    "avg_pool1d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_avg_pool1d", "MaxPool2d",
    "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "chunk", "split", "split_with_sizes",
    "set_grad_enabled_region", "alias", "lift_fresh_copy", "_to_copy",
})


ZERO_CREATORS = frozenset({"zeros", "zeros_like", "new_zeros", "zero_"})


MULTIPLY = frozenset({"mul", "mul_", "__mul__", "__rmul__", "multiply", "matmul", "__matmul__",
                       "mm", "bmm", "einsum", "outer", "dot", "mv", "Bilinear", "bilinear"})


SUM_LIKE = frozenset({"add", "add_", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "cat",
                       "concat", "stack", "__iadd__"})


# Ops computing bias + a @ b: (bias, a, b) in argument order.
BIAS_FIRST = frozenset({"addmm", "addmm_", "baddbmm", "baddbmm_", "addbmm", "addmv", "addr"})


# Ops computing x * weight + bias: (x, weight, bias) in argument order.
BIAS_LAST = frozenset({"linear", "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d",
                        "conv_transpose2d", "conv_transpose3d"})


AFFINE_MODULES = frozenset({"Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d",
                             "ConvTranspose2d", "ConvTranspose3d", "LazyLinear"})


DETACHING_OPS = {"detach": "`.detach()`", "detach_": "`.detach_()`", "data": "`.data`",
              "item": "`.item()`", "tolist": "`.tolist()`", "numpy": "`.numpy()`"}


VIEWS = frozenset({"getitem", "__getitem__", "slice", "select", "narrow", "view", "as_strided",
                    "reshape", "transpose", "permute", "expand", "unsqueeze", "squeeze", "alias",
                    "diagonal", "unfold", "t"})


NORM_PATTERN = re.compile(r"norm", re.IGNORECASE)


AFFINE_FUNCTIONS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "convolution", "_convolution",
                               "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"})


RIGHT_OPERAND = frozenset({"mm", "matmul", "__matmul__"})     # x @ W with W of shape (in, out)


# Ops that read only a tensor's metadata (shape, dtype, device), never its values: a data
# edge into them is not a value path, so it is neither a cut nor a bypass.
METADATA_OPS = frozenset({
    "size", "sym_size", "sym_numel", "sym_stride", "dim", "numel", "shape", "dtype", "device",
    "ndim", "ndimension", "is_floating_point", "is_complex", "element_size", "nelement",
    "__len__", "len", "stride", "get_device", "is_contiguous", "layout",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like",
    "randint_like", "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor",
    "_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size",
})


# Ops whose operands after the first serve as a template (dtype, device or shape only).
TEMPLATE_OPS = frozenset({"to", "type_as", "expand_as", "view_as", "reshape_as", "_to_copy"})


SUM_OPS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__",
                      "__rsub__", "__isub__", "rsub"})


SUBTRACT = frozenset({"sub", "sub_", "__sub__", "__isub__"})


# Distance and loss ops: a stop-gradient that only feeds one of these is a detached target
# (SimSiam, BYOL, distillation), the canonical intended stop-gradient.
TARGET_OPS = frozenset({
    "cosine_similarity", "pairwise_distance", "cdist", "mse_loss", "l1_loss", "smooth_l1_loss",
    "huber_loss", "kl_div", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cosine_embedding_loss", "soft_margin_loss",
    "CosineSimilarity", "PairwiseDistance", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
    "KLDivLoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss",
})


RELU_LIKE = re.compile(r"relu|gelu|silu|swish|mish|elu|hardswish", re.IGNORECASE)


# Layers whose feature axis is dim 1 (N, C, ...); every other layer's is the last dim.
CHANNEL_FIRST = frozenset({
    "conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d",
    "ConvTranspose2d", "ConvTranspose3d", "LazyConv1d", "LazyConv2d", "LazyConv3d",
})


NORM_OPS = frozenset({
    "layer_norm", "batch_norm", "group_norm", "instance_norm", "rms_norm", "native_layer_norm",
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
    "_native_batch_norm_legit_no_training", "native_group_norm", "normalize", "local_response_norm",
    "weight_norm", "_weight_norm",
})


NORM_CLASS = re.compile(r"Norm(\d*d)?$")


# Ops that merge two computed tensors: a residual add, a dense concatenation.
MERGE_OPS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "iadd", "sub", "__sub__",
                       "cat", "concat", "concatenate", "stack", "hstack", "vstack"})


ELEMENTWISE_WITH_PARAM = MERGE_OPS | frozenset({
    "mul", "mul_", "__mul__", "__rmul__", "div", "truediv", "__truediv__", "where", "masked_fill",
    "copy_", "index_put", "index_put_", "setitem", "__setitem__",
})


# Canonical activation kinds; op and module names of every frontend map onto them.
SATURATING = frozenset({"sigmoid", "tanh", "hardtanh", "hardsigmoid", "softsign", "log_sigmoid"})


RELU_FAMILY = frozenset({"relu", "relu6"})


MAX_DERIVATIVE = {"sigmoid": 0.25, "tanh": 1.0, "hardtanh": 1.0, "hardsigmoid": 1.0 / 6.0,
                  "softsign": 1.0, "log_sigmoid": 1.0}


# Composite activations (GELU's tanh approximation, SiLU = x * sigmoid(x)) call tanh or
# sigmoid internally, but their linear part carries the gradient: not saturating.
COMPOSITE = re.compile(r"gelu|silu|swish|mish|glu", re.IGNORECASE)


# Ops after which the unit (channel) dimension of a tensor is 1 (NCHW), not the last one.
CHANNEL_FIRST_PATTERN = re.compile(r"conv|batch_norm|instance_norm|group_norm|pool|BatchNorm|InstanceNorm|GroupNorm")


ACTIVATION_ALIASES = {"logsigmoid": "log_sigmoid", "sigmoid": "sigmoid", "tanh": "tanh"}


def activation_kind(target: str, module_type: str = "", scalars=()) -> str | None:
    """Canonical activation kind of an op or module name, or None for anything else.

    ``hardtanh(x, 0, 6)`` is what ``relu6`` becomes in some graphs: ReLU family.
    """
    if not target or COMPOSITE.search(module_type or ""):
        return None
    name = target.lower().rstrip("_")
    name = ACTIVATION_ALIASES.get(name, name)
    if name == "hardtanh" and list(scalars or ())[:1] == [0.0]:
        return "relu6"
    if name in SATURATING or name in RELU_FAMILY:
        return name
    return None
