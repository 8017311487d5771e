"""What the heads start with: the multi-level fusion of the dense heads (segmentation, landmark regression), and
the pooled features of the image-level heads (classification, measurement)."""

import torch
from torch import nn
from torch.nn import functional as F


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    groups = 8 if out_channels % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.GroupNorm(groups, out_channels), nn.GELU()
    )


class MultiLevelFusionHead(nn.Module):
    """Base of the dense heads: projects each feature level (all at stride 16) to `config.decoder_hidden_size`
    channels, sums the projections and fuses the sum with a convolution block."""

    def __init__(self, config):
        super().__init__()
        width = config.decoder_hidden_size
        self.level_projections = nn.ModuleList(nn.Conv2d(config.hidden_size, width, 1) for _ in config.feature_layers)
        self.fuse = conv_block(width, width)

    def fuse_levels(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.fuse(sum(project(level) for project, level in zip(self.level_projections, feature_maps)))


class PooledFeaturesHead(nn.Module):
    """Base of the image-level heads: the DINOv3 linear-probe features, [class token; mean of patch tokens], plus the
    means of the four quadrants of the patch grid (so that what tells images apart by where something lies can be
    read), layer-normalised: `pooled_features_size` values per image."""

    def __init__(self, config):
        super().__init__()
        self.pooled_features_size = 6 * config.hidden_size  # class token, mean patch token, four quadrant means
        self.norm = nn.LayerNorm(self.pooled_features_size, eps=config.layer_norm_eps)

    def pool(self, feature_maps: tuple[torch.Tensor, ...], pooled_output: torch.Tensor) -> torch.Tensor:
        patches = feature_maps[-1]
        quadrants = F.adaptive_avg_pool2d(patches, 2).flatten(1)
        return self.norm(torch.cat([pooled_output, patches.mean(dim=(2, 3)), quadrants], dim=-1))


__all__ = ["MultiLevelFusionHead", "PooledFeaturesHead", "conv_block"]
