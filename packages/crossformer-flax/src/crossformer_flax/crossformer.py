"""CrossFormer: "A Versatile Vision Transformer Hinging on Cross-scale Attention" (Wang et al., 2022),
after vit-pytorch's ``crossformer.py``."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn

from crossformer_flax.attention import LongShortDistanceAttention
from crossformer_flax.cross_embed import CrossEmbedLayer, embedded_side, embedding_padding, scale_dims
from vit_layers_flax import (
    FeatureInfo,
    FeedForward,
    ImageClassifier,
    InputSizes,
    Layer,
    apply_blocks,
    cast_tuple,
    check_config,
    check_images,
    check_stage_size,
)
from vit_layers_flax.typing import Array

#: the reference's attention always has 32 channels per head (its ``Transformer`` does not pass ``dim_head``).
DIM_HEAD = 32
#: the reference's feed-forward always expands by 4 (``mult`` is not passed either).
FF_MULT = 4
NUM_STAGES = 4


class CrossFormerBlock(Layer):
    """One layer of the reference's ``crossformer.Transformer``: ``(batch, H, W, dim)`` in and out.

    ``x + short_attn(x)``, ``x + short_ff(x)``, ``x + long_attn(x)``, ``x + long_ff(x)``
    (the reference's ``layers.{i}.0`` ... ``.3``): a short-distance
    :class:`~crossformer_flax.LongShortDistanceAttention` on adjacent ``local_window_size``
    windows and a long-distance one on ``global_window_size`` windows of spaced positions,
    each followed by a :class:`vit_layers_flax.FeedForward` of ``mlp_dim`` hidden channels.
    ``dropout`` is the feed-forward dropout, ``attn_dropout`` the attention-weight dropout.
    """

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    local_window_size: int
    global_window_size: int
    dropout: float = 0.0
    attn_dropout: float = 0.0
    attention_implementation: str | None = None

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for attn_type, window in (("short", self.local_window_size), ("long", self.global_window_size)):
            attn = LongShortDistanceAttention(
                self.dim,
                attn_type=attn_type,
                window_size=window,
                heads=self.heads,
                dim_head=self.dim_head,
                dropout=self.attn_dropout,
                implementation=self.attention_implementation,
                name=f"{attn_type}_attn",
                **dtypes,
            )
            x = x + attn(x, train=train)
            # the reference's feed-forward (channel LayerNorm, 1x1 convs) ends with its second
            # projection: the shared FeedForward on the channel axis, without output dropout
            ff = FeedForward(
                self.dim,
                self.mlp_dim,
                dropout=self.dropout,
                output_dropout=False,
                name=f"{attn_type}_ff",
                **dtypes,
            )
            x = x + ff(x, train=train)
        return x


class Stage(nn.Module):
    """One CrossFormer stage: ``(batch, H, W, C) -> (batch, H', W', dim)``.

    ``embedding`` and ``block`` build, from a ``name``, the
    :class:`~crossformer_flax.CrossEmbedLayer` (``cel``, the reference's ``layers.{s}.0``)
    and each of the ``depth`` :class:`CrossFormerBlock` s (``layers_{i}``, the reference's
    ``layers.{s}.1.layers.{i}``).
    """

    embedding: Callable[..., nn.Module]
    block: Callable[..., nn.Module]
    depth: int
    remat: bool = False
    scan: bool = False

    @nn.compact
    def __call__(self, x: Array, *, train: bool = False) -> Array:
        x = self.embedding(name="cel")(x)
        make_block = lambda name: self.block(name=name)  # noqa: E731
        return apply_blocks(make_block, self.depth, x, train=train, scan=self.scan, remat=self.remat)


class CrossFormer(ImageClassifier):
    """CrossFormer (Wang et al., 2022; ICLR, arXiv:2108.00154): four stages of cross-scale
    embedding and long/short distance attention. Feature maps: each stage's output.

    ``dim``, ``depth``, ``global_window_size``, ``local_window_size`` and
    ``cross_embed_strides`` take one int or one value per stage, ``cross_embed_kernel_sizes``
    one sequence of kernel sizes per stage. Stage ``s`` (``stages_{s}``) embeds its input with
    one convolution per kernel size, concatenated to ``dim[s]`` channels, then runs ``depth[s]``
    :class:`CrossFormerBlock` s. A stage with layers needs a map whose sides are multiples of
    both window sizes (:meth:`input_sizes`, :meth:`stage_sizes`). ``attn_dropout`` acts on the
    attention weights, ``ff_dropout`` inside the feed-forwards; ``to_logits`` classifies the mean.
    """

    dim: int | Sequence[int] = (64, 128, 256, 512)
    depth: int | Sequence[int] = (2, 2, 8, 2)
    global_window_size: int | Sequence[int] = (8, 4, 2, 1)
    local_window_size: int | Sequence[int] = 7
    cross_embed_kernel_sizes: Sequence[Sequence[int]] = ((4, 8, 16, 32), (2, 4), (2, 4), (2, 4))
    cross_embed_strides: int | Sequence[int] = (4, 2, 2, 2)
    num_classes: int = 1000
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    channels: int = 3
    attention_implementation: str | None = None

    def stage_configs(self) -> list[dict[str, Any]]:
        """The four stages' ``dim``, ``depth``, window sizes, ``kernel_sizes`` and ``stride``."""
        fields = {
            "dim": cast_tuple(self.dim, NUM_STAGES),
            "depth": cast_tuple(self.depth, NUM_STAGES),
            "local_window_size": cast_tuple(self.local_window_size, NUM_STAGES),
            "global_window_size": cast_tuple(self.global_window_size, NUM_STAGES),
            "kernel_sizes": cast_tuple(self.cross_embed_kernel_sizes, NUM_STAGES),
            "stride": cast_tuple(self.cross_embed_strides, NUM_STAGES),
        }
        return [{name: values[s] for name, values in fields.items()} for s in range(NUM_STAGES)]

    def __post_init__(self):
        check_config(
            self.num_classes >= 0,
            f"CrossFormer: num_classes must not be negative, received {self.num_classes}",
        )
        check_config(self.channels > 0, f"CrossFormer: channels must be positive, received {self.channels}")
        for name in ("attn_dropout", "ff_dropout"):
            value = getattr(self, name)
            check_config(0.0 <= value < 1.0, f"CrossFormer: {name} must be in [0, 1), received {value}")
        try:
            stages = self.stage_configs()
        except ValueError as error:  # a per-stage value without four entries
            raise ValueError(f"CrossFormer: one value or four (one per stage) expected: {error}") from None
        for s, config in enumerate(stages, start=1):
            kernels = config["kernel_sizes"]
            check_config(
                isinstance(kernels, Sequence) and len(kernels) > 0,
                f"CrossFormer: cross_embed_kernel_sizes must hold a non-empty sequence of kernel sizes per "
                f"stage, received {kernels!r} for stage {s}",
            )
            bad = {
                k: v
                for k, v in config.items()
                if k != "kernel_sizes" and not (v >= 0 if k == "depth" else v > 0)
            }
            check_config(
                not bad,
                f"CrossFormer: stage {s} sizes must be positive (depth non-negative), received "
                + ", ".join(f"{k}={v}" for k, v in bad.items()),
            )
            check_config(
                config["dim"] >= DIM_HEAD,
                f"CrossFormer: stage {s} dim must be at least {DIM_HEAD} (heads = dim // {DIM_HEAD}), "
                f"received {config['dim']}",
            )
            check_config(
                min(kernels) >= config["stride"],
                f"CrossFormer: stage {s} cross-embedding kernels {tuple(kernels)} must not be smaller than "
                f"its stride {config['stride']} (the padding (kernel - stride) // 2 would be negative)",
            )
            check_config(
                config["stride"] > 1 or len({k % 2 for k in kernels}) == 1,
                f"CrossFormer: stage {s} cross-embedding kernels {tuple(kernels)} mix odd and even sizes with "
                f"stride 1: their outputs always differ by one pixel and cannot be concatenated",
            )
            check_config(
                min(scale_dims(config["dim"], len(kernels))) > 0,
                f"CrossFormer: stage {s} dim {config['dim']} is too small for {len(kernels)} kernel sizes: "
                f"their convolutions would get {scale_dims(config['dim'], len(kernels))} channels",
            )
        super().__post_init__()

    @property
    def num_features(self) -> int:
        return self.stage_configs()[-1]["dim"]

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Each stage's output: ``dim[s]`` channels, reduced by the product of the strides so far."""
        maps, reduction = [], 1
        for s, config in enumerate(self.stage_configs()):
            reduction *= config["stride"]
            maps.append(FeatureInfo(config["dim"], (reduction, reduction), f"stages_{s}"))
        return tuple(maps)

    def stage_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(H_s, W_s)`` of the four stages' feature maps for ``height x width`` images.

        Computed from each stage's smallest kernel; sizes below one, or kernels that
        disagree, are reported by the model at trace time.
        """
        sizes = []
        for config in self.stage_configs():
            kernel, stride = min(config["kernel_sizes"]), config["stride"]
            height, width = embedded_side(height, kernel, stride), embedded_side(width, kernel, stride)
            sizes.append((height, width))
        return sizes

    def input_sizes(self) -> InputSizes:
        """The smallest image side whose four stage maps fit their windows, and the step after
        which the accepted sides repeat. Sides that round down through the strides to the same
        maps as an accepted side are accepted too. A ``ValueError`` when no side fits.
        """
        # Backwards over the stages: the sides a stage takes as input are {x >= low : x % period
        # in residues}, since its embedding maps x + stride * p to (x - shift) // stride + p.
        low, period, residues = 1, 1, {0}
        for s, config in reversed(list(enumerate(self.stage_configs(), start=1))):
            windows = (config["local_window_size"], config["global_window_size"])
            window = math.lcm(*windows) if config["depth"] > 0 else 1
            out_period = math.lcm(period, window)
            outputs = {y for y in range(out_period) if y % period in residues and y % window == 0}
            stride = config["stride"]
            parities = {(k - stride) % 2 for k in config["kernel_sizes"]}
            shift = max(parities)  # an odd kernel - stride gives (x - 1) // stride
            period = stride * out_period
            # kernels of both parities agree only on sides that are not multiples of the stride
            residues = {
                x
                for x in range(period)
                if (x - shift) // stride % out_period in outputs and (len(parities) == 1 or x % stride)
            }
            low = stride * low + shift
            if not residues:
                raise ValueError(
                    f"CrossFormer: no image size fits the windows of stage {s} and the stages after it"
                )
        smallest = min(r + period * -((r - low) // period) for r in residues)
        step = min(
            d
            for d in range(1, period + 1)
            if period % d == 0 and all((r + d) % period in residues for r in residues)
        )
        return InputSizes(smallest, step)

    def _check_stage_sizes(self, img: Array) -> None:
        """Raise a ``ValueError`` naming the stage whose feature map these images do not fit."""
        shape = tuple(img.shape)
        height, width = shape[1:3]
        for s, config in enumerate(self.stage_configs(), start=1):
            kernels, stride = sorted(config["kernel_sizes"]), config["stride"]
            sizes = {k: (embedded_side(height, k, stride), embedded_side(width, k, stride)) for k in kernels}
            if min(min(hw) for hw in sizes.values()) < 1:
                smallest = max(k - 2 * embedding_padding(k, stride) for k in kernels)
                raise ValueError(
                    f"CrossFormer: images of shape {shape} give stage {s} a {height}x{width} input, too small "
                    f"for its cross-embedding convolutions (kernels {tuple(kernels)}, stride {stride}): "
                    f"expected a stage input of at least {smallest}x{smallest}"
                )
            if len(set(sizes.values())) > 1:
                # kernels with even and odd (kernel - stride) round the padding differently: the
                # reference's torch.cat fails when the input side is a multiple of the stride
                found = ", ".join(f"{h}x{w} from kernel {k}" for k, (h, w) in sizes.items())
                raise ValueError(
                    f"CrossFormer: images of shape {shape} give stage {s} a {height}x{width} input, on which "
                    f"its cross-embedding convolutions (stride {stride}) disagree ({found}): expected an "
                    f"input side that is not a multiple of {stride}, or kernels whose kernel - stride "
                    f"have one parity"
                )
            height, width = sizes[kernels[0]]
            if config["depth"] > 0:  # a stage without layers partitions nothing, as in the reference
                for what in ("local_window_size", "global_window_size"):
                    check_stage_size(
                        img,
                        stage=s,
                        size=(height, width),
                        window=config[what],
                        what=what.replace("_size", "").replace("_", " "),
                        name="CrossFormer",
                    )

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        check_images(img, channels=self.channels, name="CrossFormer")
        self._check_stage_sizes(img)
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        x, features = img, []
        for s, config in enumerate(self.stage_configs()):
            dim = config["dim"]
            embedding = functools.partial(
                CrossEmbedLayer, dim, tuple(config["kernel_sizes"]), config["stride"], **dtypes
            )
            block = functools.partial(
                CrossFormerBlock,
                dim,
                dim // DIM_HEAD,
                DIM_HEAD,
                dim * FF_MULT,
                local_window_size=config["local_window_size"],
                global_window_size=config["global_window_size"],
                dropout=self.ff_dropout,
                attn_dropout=self.attn_dropout,
                attention_implementation=self.attention_implementation,
                **dtypes,
            )
            stage = Stage(
                embedding, block, config["depth"], remat=self.remat, scan=self.scan, name=f"stages_{s}"
            )
            x = stage(x, train=train)
            features.append(x)
        if return_features:
            return self.select_features(features)

        x = x.mean(axis=(1, 2))  # Reduce('b c h w -> b c', 'mean')
        return self.classify(x, pre_logits=pre_logits, name="to_logits")
