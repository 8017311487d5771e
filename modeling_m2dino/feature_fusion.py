"""The multi-level fusion the dense heads (segmentation, landmark regression) start with."""

import torch
from torch import nn


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


__all__ = ["MultiLevelFusionHead", "conv_block"]
