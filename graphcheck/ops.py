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


# Additions and subtractions, as every frontend names them.
ADD_SUB = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "iadd", "sub", "sub_", "__sub__",
                     "__rsub__", "__isub__", "rsub"})
# Ops whose second operand is subtracted from the first (``x - y``).
SUBTRACT = frozenset({"sub", "sub_", "__sub__", "__isub__"})
CONCATENATE = frozenset({"cat", "concat", "concatenate", "stack", "hstack", "vstack"})
# Ops that sum or join their operands: zero when every operand is zero; a merge of two
# computed tensors is a residual add or a dense concatenation.
SUM_LIKE = ADD_SUB | CONCATENATE

# Ops computing bias + a @ b: (bias, a, b) in argument order.
BIAS_FIRST = frozenset({"addmm", "addmm_", "baddbmm", "baddbmm_", "addbmm", "addmv", "addr"})


# Affine layers x * weight + bias, as functions (arguments in the order x, weight, bias)
# and as fx leaf-module calls.
CONVOLUTIONS = frozenset({"conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d",
                          "conv_transpose2d", "conv_transpose3d"})
AFFINE_FUNCTIONS = CONVOLUTIONS | {"linear"}
BIAS_LAST = AFFINE_FUNCTIONS
CONV_MODULES = frozenset({"Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                          "LazyConv1d", "LazyConv2d", "LazyConv3d"})
AFFINE_MODULES = CONV_MODULES | {"Linear", "LazyLinear"}


DETACHING_OPS = {"detach": "`.detach()`", "detach_": "`.detach_()`", "data": "`.data`",
              "item": "`.item()`", "tolist": "`.tolist()`", "numpy": "`.numpy()`"}


VIEWS = frozenset({"getitem", "__getitem__", "slice", "select", "narrow", "view", "as_strided",
                    "reshape", "transpose", "permute", "expand", "unsqueeze", "squeeze", "alias",
                    "diagonal", "unfold", "t"})


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


# Distance and loss ops: a stop-gradient that only feeds one of these is a detached target
# (SimSiam, BYOL, distillation), the canonical intended stop-gradient.
TARGET_OPS = frozenset({
    "cosine_similarity", "pairwise_distance", "cdist", "mse_loss", "l1_loss", "smooth_l1_loss",
    "huber_loss", "kl_div", "cross_entropy", "nll_loss", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "cosine_embedding_loss", "soft_margin_loss",
    "CosineSimilarity", "PairwiseDistance", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
    "KLDivLoss", "CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss",
})


NORM_OPS = frozenset({
    "layer_norm", "batch_norm", "group_norm", "instance_norm", "rms_norm", "native_layer_norm",
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
    "_native_batch_norm_legit_no_training", "native_group_norm", "normalize", "local_response_norm",
    "weight_norm", "_weight_norm",
})


# Normalisation modules by class name: LayerNorm, BatchNorm2d, GroupNorm, LlamaRMSNorm...
# (not any class whose name contains "norm": ``torch.norm`` and ``Normalizer`` are not layers).
NORM_CLASS = re.compile(r"Norm(\d*d)?$")


def is_normalisation(target: str, module_type: str = "") -> bool:
    """A normalisation op (``layer_norm``, ``batch_norm``...), or an op inside a normalisation module."""
    return target in NORM_OPS or bool(NORM_CLASS.search(target or "")) or bool(NORM_CLASS.search(module_type or ""))


# Ops and modules after which a tensor's feature (channel) axis is dim 1 (N, C, ...), not the last.
POOLS = frozenset({"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
                   "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
                   "adaptive_max_pool2d", "max_pool2d_with_indices", "MaxPool1d", "MaxPool2d", "MaxPool3d",
                   "AvgPool1d", "AvgPool2d", "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d",
                   "AdaptiveAvgPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"})
CHANNEL_FIRST = CONVOLUTIONS | CONV_MODULES | POOLS | {
    "batch_norm", "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_functional",
    "_native_batch_norm_legit_no_training", "instance_norm", "group_norm", "native_group_norm",
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "GroupNorm"}


# Elementwise ops that may take a parameter operand without being a layer (a scale, a mask).
ELEMENTWISE_WITH_PARAM = SUM_LIKE | frozenset({
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
# Non-saturating activations a Kaiming initialisation is meant for (ReLU, GELU, SiLU, ELU...).
RELU_LIKE = re.compile(r"relu|gelu|silu|swish|mish|elu|hardswish", re.IGNORECASE)


def is_relu_like(target: str, module_type: str = "") -> bool:
    return bool(RELU_LIKE.search(target or "") or RELU_LIKE.search(module_type or ""))


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


def is_in_place(target: str) -> bool:
    """Ops that write into their input tensor (``add_``, ``x[i] = y``, ``copy_``)."""
    return (target.endswith("_") and not target.endswith("__")) or target.startswith("__i") \
        or target in ("setitem", "__setitem__", "index_put", "copy")


# Dropout: all zeros in training mode with p == 1 (probability first among the numbers).
DROPOUT = frozenset({"dropout", "dropout_", "alpha_dropout", "feature_alpha_dropout", "dropout1d",
                     "dropout2d", "dropout3d", "native_dropout", "Dropout", "Dropout1d", "Dropout2d",
                     "Dropout3d"})


# Normalisation with an affine part, normalise(x) * weight + bias: a zero input normalises to
# zero, so the weight's gradient (a sum of grad * normalised input) is zero while the bias trains.
# Tensor operands in the order x, weight, bias (module calls list the module's weight, bias).
AFFINE_NORM_FUNCTIONS = frozenset({"layer_norm", "native_layer_norm", "group_norm", "native_group_norm",
                                   "rms_norm"})
AFFINE_NORM_MODULES = frozenset({"LayerNorm", "GroupNorm", "RMSNorm"})
# Batch normalisation normalises a zero input to zero only with batch statistics (training):
# in eval mode it subtracts the running mean. The first boolean argument says which.
BATCH_NORM_FUNCTIONS = frozenset({"batch_norm", "_native_batch_norm_legit_functional",
                                  "_native_batch_norm_legit", "native_batch_norm"})
BATCH_NORM_MODULES = frozenset({"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"})


# Ops that act on each position on its own (unary maps, broadcasting arithmetic, casts): a
# position of one dimension of an operand only meets the same position of the result.
POSITIONWISE = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "hardtanh", "elu", "selu",
    "celu", "mish", "hardswish", "hardsigmoid", "softplus", "softsign", "logsigmoid", "exp", "log", "abs",
    "neg", "__neg__", "sqrt", "rsqrt", "pow", "__pow__", "square", "sin", "cos", "erf", "clamp", "clip",
    "add", "__add__", "__radd__", "sub", "__sub__", "__rsub__", "rsub", "mul", "__mul__", "__rmul__",
    "div", "truediv", "__truediv__", "__rtruediv__", "where", "masked_fill", "maximum", "minimum",
    "dropout", "contiguous", "clone", "to", "float", "half", "double", "bfloat16", "type_as", "_to_copy",
    "alias", "lift_fresh_copy", "detach", "ReLU", "ReLU6", "LeakyReLU", "GELU", "SiLU", "Tanh", "Sigmoid",
    "ELU", "Mish", "Hardswish", "Softplus", "Dropout", "Identity",
})
# Ops that rearrange dimensions without mixing positions along any of them.
REARRANGE = frozenset({"transpose", "permute", "t", "unsqueeze", "squeeze", "expand", "expand_as",
                       "movedim", "swapaxes"})
# Reshapes: a dimension survives when the sizes before it multiply to the same number.
RESHAPE = frozenset({"view", "reshape", "_unsafe_view", "flatten", "unflatten", "view_as", "reshape_as"})
# Matrix products over batch dimensions: rows of the left operand and columns of the right one
# stay apart, as do the batch dimensions; the contracted dimension mixes.
BATCHED_MATMUL = frozenset({"matmul", "__matmul__", "bmm", "mm"})
# Basic indexing; the frontends describe their bounds in the ``index`` attribute.
INDEXING = frozenset({"getitem", "__getitem__", "slice", "select", "narrow"})
# Ops that cut a tensor into consecutive pieces along one dimension (a tuple of views).
SPLITS = frozenset({"split", "split_with_sizes", "chunk", "tensor_split", "split_copy", "unsafe_split"})
