"""RegionViT: "Regional-to-Local Attention for Vision Transformers", after vit-pytorch's ``regionvit.py``."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from regionvit_flax.r2l_transformer import R2LTransformer
from regionvit_flax.tokenizers import LocalTokenizer3Conv, region_patches
from vit_layers_flax import (
    PEG,
    ClassifierHead,
    Conv,
    Dense,
    FeatureInfo,
    ImageClassifier,
    InputSizes,
    Model,
    cast_tuple,
    check_config,
    check_images,
    check_stage_size,
    conv_output_size,
)
from vit_layers_flax.typing import Array

#: the reference's R2LTransformer is always built with its defaults: 4 heads of 32 channels.
HEADS = 4
DIM_HEAD = 32
NUM_STAGES = 4


class Stage(Model):
    """One RegionViT stage: (``downsample``,) (``peg``,) the regional-to-local ``transformer``.

    ``local_tokens: (batch, lh, lw, dim_in)``, ``region_tokens: (batch, rh, rw, dim_in)`` ``->``
    ``(batch, lh', lw', dim)``, ``(batch, rh', rw', dim)``. Stages after the first halve both
    maps (a side ``n`` becomes ``ceil(n / 2)``) with ONE 3x3 stride-2 convolution applied to
    the local and to the regional tokens alike, as the reference's single ``Downsample``;
    ``peg`` (with ``use_peg``) acts on the local tokens only; ``transformer`` is the
    :class:`~regionvit_flax.R2LTransformer`. The reference's ``layers.{i}.0``, ``.1``, ``.2``.
    """

    dim: int
    depth: int
    window_size: int
    downsample: bool
    use_peg: bool
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    attention_implementation: str | None = None

    @nn.compact
    def __call__(
        self, local_tokens: Array, region_tokens: Array, *, train: bool = False
    ) -> tuple[Array, Array]:
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if self.downsample:
            down = Conv(self.dim, 3, strides=2, padding=1, name="downsample", **dtypes)
            # the reference's quirk: ONE Downsample module (same weights) for both token maps
            local_tokens, region_tokens = down(local_tokens), down(region_tokens)
        if self.use_peg:
            local_tokens = PEG(name="peg", **dtypes)(local_tokens)
        return R2LTransformer(
            self.dim,
            self.window_size,
            depth=self.depth,
            heads=HEADS,
            dim_head=DIM_HEAD,
            attn_dropout=self.attn_dropout,
            ff_dropout=self.ff_dropout,
            remat=self.remat,
            scan=self.scan,
            attention_implementation=self.attention_implementation,
            name="transformer",
            **dtypes,
        )(local_tokens, region_tokens, train=train)


class RegionViT(ImageClassifier):
    """RegionViT (Chen, Panda and Fan, ICLR 2022, arXiv:2106.02689): a four-stage pyramid of
    regional and local tokens with regional-to-local attention.

    Local tokens come from ``local_encoder`` (8x8 conv, stride 4; or
    :class:`~regionvit_flax.LocalTokenizer3Conv`), regional ones from :attr:`region_patch_size`
    patches (``region_encoder``). ``stages_{i}`` (:class:`Stage`) have width ``dim[i]``,
    ``depth[i]`` layers and 4 heads of 32 (fixed, as in the reference); the head ``to_logits``
    classifies the mean regional token. Feature maps: each stage's local tokens.
    ``local_patch_size`` sets only the regional patches (the local tokenizers have stride 4,
    as the reference's); dropout: ``attn_dropout`` in attention, ``ff_dropout`` in feed-forward.
    """

    dim: int | Sequence[int] = (64, 128, 256, 512)
    depth: int | Sequence[int] = (2, 2, 8, 2)
    window_size: int = 7
    num_classes: int = 1000
    tokenize_local_3_conv: bool = False
    local_patch_size: int = 4
    use_peg: bool = False
    attn_dropout: float = 0.0
    ff_dropout: float = 0.0
    channels: int = 3
    attention_implementation: str | None = None

    @property
    def dims(self) -> tuple[int, ...]:
        """``dim`` as four stage widths."""
        return cast_tuple(self.dim, NUM_STAGES)

    @property
    def depths(self) -> tuple[int, ...]:
        """``depth`` as four stage depths."""
        return cast_tuple(self.depth, NUM_STAGES)

    @property
    def region_patch_size(self) -> int:
        """The side of the image patch under one regional token: ``local_patch_size * window_size``."""
        return self.local_patch_size * self.window_size

    def __post_init__(self):
        for name in ("dim", "depth"):
            value = getattr(self, name)
            check_config(
                not isinstance(value, (tuple, list)) or len(value) == NUM_STAGES,
                f"RegionViT: {name} needs to be a single value or a tuple of length 4, received {value!r}",
            )
        check_config(min(self.dims) > 0, f"RegionViT: dim must be positive, received {self.dim!r}")
        check_config(min(self.depths) >= 0, f"RegionViT: depth must be non-negative, received {self.depth!r}")
        for name in ("window_size", "local_patch_size", "channels"):
            value = getattr(self, name)
            check_config(value > 0, f"RegionViT: {name} must be positive, received {value}")
        check_config(
            self.num_classes >= 0, f"RegionViT: num_classes must be >= 0, received {self.num_classes}"
        )
        for name in ("attn_dropout", "ff_dropout"):
            value = getattr(self, name)
            check_config(0.0 <= value < 1.0, f"RegionViT: {name} must be in [0, 1), received {value}")
        super().__post_init__()

    def input_sizes(self) -> InputSizes:
        """The sides at which every stage's local map is whole windows over its regional grid:
        multiples of ``region_patch_size * 8`` (three downsamplings halve the grid), provided
        ``local_patch_size <= 4`` and ``local_patch_size * window_size`` is a multiple of 4 (a
        window is then ``local_patch_size * window_size / 4`` local tokens wide). Smaller sides
        whose regional grid shrinks to one token early are taken too (by default 224, 448, ...
        and, besides, 28, 56 and 112); :meth:`stage_sizes` gives every stage's maps."""
        side = self.region_patch_size * 2 ** (NUM_STAGES - 1)
        return InputSizes(side, side)

    def stage_sizes(self, height: int, width: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """For images of ``height x width``: per stage, the local and the regional map sizes,
        ``[((lh, lw), (rh, rw)), ...]`` (no check of whether they fit)."""
        if self.tokenize_local_3_conv:
            local = [conv_output_size(conv_output_size(n, 3, 2, 1), 3, 2, 1) for n in (height, width)]
        else:
            local = [conv_output_size(n, 8, 4, 3) for n in (height, width)]
        region = [n // self.region_patch_size for n in (height, width)]
        sizes = []
        for stage in range(NUM_STAGES):
            if stage > 0:  # Downsample: 3x3, stride 2, padding 1
                local, region = ([conv_output_size(n, 3, 2, 1) for n in m] for m in (local, region))
            sizes.append((tuple(local), tuple(region)))
        return sizes

    def _check_stage_sizes(self, img) -> None:
        """Every stage's local map must be the regional grid times a window of at most ``window_size``."""
        _, height, width, _ = img.shape
        for stage, ((lh, lw), (rh, rw)) in enumerate(self.stage_sizes(height, width), start=1):
            window = (max(lh // rh, 1), max(lw // rw, 1))
            # the reference's window is lh // rh: the local map must split into such windows ...
            check_stage_size(
                img, stage=stage, size=(lh, lw), window=window, what="local window", name="RegionViT"
            )
            # ... exactly one per regional token
            check_stage_size(
                img,
                stage=stage,
                size=(lh, lw),
                window=(rh, rw),
                what="grid of regional tokens",
                name="RegionViT",
            )
            if max(window) > self.window_size:  # would index past the relative position bias table
                raise ValueError(
                    f"RegionViT: images of shape {tuple(img.shape)} give stage {stage} a {lh}x{lw} local map over "
                    f"{rh}x{rw} regional tokens, so {window[0]}x{window[1]} local windows: expected windows of at "
                    f"most window_size {self.window_size} (the local tokenizer has stride 4 whatever "
                    f"local_patch_size {self.local_patch_size} is)"
                )

    @property
    def num_features(self) -> int:
        return self.dims[-1]

    def feature_maps(self) -> tuple[FeatureInfo, ...]:
        """Stage ``i``'s local tokens: ``dim[i]`` channels, reduction ``4 * 2 ** i`` (each
        downsampling rounds up, so a map can be one token larger)."""
        return tuple(FeatureInfo(d, (4 * 2**i,) * 2, f"stages_{i}") for i, d in enumerate(self.dims))

    @nn.compact
    def __call__(
        self, img: Array, *, train: bool = False, pre_logits: bool = False, return_features: bool = False
    ) -> Array | tuple[Array, ...]:
        patch = self.region_patch_size
        check_images(img, channels=self.channels, multiple_of=(patch, patch), name="RegionViT")
        self._check_stage_sizes(img)
        dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        init_dim = self.dims[0]

        # the reference's quirk: the local tokenizers have stride 4 whatever local_patch_size is
        if self.tokenize_local_3_conv:
            local_tokens = LocalTokenizer3Conv(init_dim, name="local_encoder", **dtypes)(img)
        else:
            local_tokens = Conv(init_dim, 8, strides=4, padding=3, name="local_encoder", **dtypes)(img)
        region_tokens = Dense(init_dim, name="region_encoder", **dtypes)(region_patches(img, patch))

        features = []
        for i, (dim, depth) in enumerate(zip(self.dims, self.depths, strict=True)):
            local_tokens, region_tokens = Stage(
                dim,
                depth,
                self.window_size,
                downsample=i > 0,
                use_peg=i > 0 and self.use_peg,
                attn_dropout=self.attn_dropout,
                ff_dropout=self.ff_dropout,
                remat=self.remat,
                scan=self.scan,
                attention_implementation=self.attention_implementation,
                name=f"stages_{i}",
                **dtypes,
            )(local_tokens, region_tokens, train=train)
            features.append(local_tokens)
        if return_features:
            return self.select_features(features)
        # Reduce('b c h w -> b c', 'mean'), LayerNorm, Linear
        head = ClassifierHead(self.num_classes, name="to_logits", **dtypes)
        return head(region_tokens.mean(axis=(1, 2)), pre_logits=pre_logits)
