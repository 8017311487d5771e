"""`M2DinoBackbone`: M2DINO as a transformers backbone whose feature maps form a pyramid of strides 4, 8, 16, 32.

A ViT keeps one resolution (stride 16, the patch size) in every layer. Decoders written for convolutional
backbones (UperNet, FPN-style heads) expect a pyramid, so this backbone builds one from four encoder layers the
way simple feature pyramids on plain ViTs do (ViTDet; BEiT and DPT for UperNet): the map of the first selected
layer is upsampled twice by transposed convolutions (stride 4), the second once (stride 8), the third is kept
(stride 16) and the fourth max-pooled (stride 32). Earlier layers go to finer levels, as in DPT.
"""

import json
import os

import torch
from torch import nn
from transformers import AutoBackbone
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_outputs import BackboneOutput
from transformers.models.auto.auto_factory import _BaseAutoModelClass
from transformers.utils import logging as hf_logging
from transformers.utils.generic import can_return_tuple

from .configuration_m2dino import M2DinoConfig
from .loading_checks import load_report_replaced
from .modeling_m2dino import M2DinoModel, M2DinoPreTrainedModel

logger = hf_logging.get_logger(__name__)

PYRAMID_STRIDES = (4, 8, 16, 32)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (batch, channels, height, width) map (ViTDet's choice: no batch statistics,
    so small batches and evaluation behave as training)."""

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_state.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class M2DinoFeaturePyramid(nn.Module):
    """Turns four stride-16 maps into maps of strides 4, 8, 16 and 32 (channels unchanged)."""

    def __init__(self, config: M2DinoConfig):
        super().__init__()
        width = config.hidden_size
        self.levels = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
                    ChannelLayerNorm(width, eps=config.layer_norm_eps),
                    nn.GELU(),
                    nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
                ),
                nn.ConvTranspose2d(width, width, kernel_size=2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
        )

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(level(feature_map) for level, feature_map in zip(self.levels, feature_maps))


class M2DinoBackbone(BackboneMixin, M2DinoPreTrainedModel):
    """M2DINO as a transformers backbone (`AutoBackbone`), for decoders of your own or of transformers (UperNet).

    `config.out_indices` / `out_features` select four encoder stages (`"stem"` is the embeddings, `"stageN"` the
    output of layer N); they default to `config.feature_layers`, the levels M2DINO's own dense heads read. The
    selected maps, normalised by the final LayerNorm, become a pyramid of strides 4, 8, 16 and 32 (see the module
    docstring); every map has `hidden_size` channels. The MoE layers route by task: pass `tasks` (task ids) or
    `task_ids`, else `config.default_task` is used.

    Loading from any saved M2DINO folder keeps its encoder weights (a missing encoder weight is an error) and
    initialises the pyramid's transposed convolutions, which only a saved `M2DinoBackbone` holds.
    """

    def __init__(self, config: M2DinoConfig):
        super().__init__(config)
        self.m2dino = M2DinoModel(config)
        self.num_features = [config.hidden_size] * len(self.stage_names)
        if len(self.out_indices) != len(PYRAMID_STRIDES):
            raise ValueError(
                f"M2DinoBackbone builds a pyramid of strides {PYRAMID_STRIDES} from exactly {len(PYRAMID_STRIDES)} "
                f"encoder stages; config.out_features is {self.out_features} (out_indices {self.out_indices}). "
                f"Select four of {self.stage_names}."
            )
        self.pyramid = M2DinoFeaturePyramid(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.m2dino.get_input_embeddings()

    @property
    def strides(self) -> list[int]:
        """The stride of each returned feature map, in pixels of the input image."""
        return list(PYRAMID_STRIDES)

    @can_return_tuple
    @filter_output_hidden_states
    def forward(
        self,
        pixel_values: torch.Tensor,
        tasks: str | list[str] | None = None,
        task_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> BackboneOutput:
        # Stage maps come from the hidden states (stage 0 = embeddings output, stage N = output of layer N), which
        # `filter_output_hidden_states` always asks for and returns only when the call or config does.
        outputs = self.m2dino(pixel_values, tasks=tasks, task_ids=task_ids, return_dict=True, **kwargs)
        grid = (pixel_values.shape[-2] // self.config.patch_size, pixel_values.shape[-1] // self.config.patch_size)
        prefix = 1 + self.config.num_register_tokens
        stage_maps = tuple(
            self.m2dino.tokens_to_map(self.m2dino.norm(outputs.hidden_states[index]), prefix, grid)
            for index in self.out_indices
        )
        return BackboneOutput(
            feature_maps=self.pyramid(stage_maps), hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads the encoder of any saved M2DINO folder with the checks of every M2DINO class (safetensors only,
        the task list of the weights), an error if it lacks an encoder weight, and initialises the feature pyramid
        when the folder has none (a folder saved by `M2DinoModel` or a head class)."""
        want_info = kwargs.pop("output_loading_info", False)
        # The messages below replace transformers' load report, which would list the new pyramid as missing.
        with load_report_replaced(cls.__name__):
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        missing_encoder = sorted(k for k in info["missing_keys"] if not k.startswith("pyramid."))
        if missing_encoder:
            raise ValueError(
                f"M2DinoBackbone: the checkpoint at {pretrained_model_name_or_path} lacks {len(missing_encoder)} encoder "
                f"weight(s): {missing_encoder[:12]}{' ...' if len(missing_encoder) > 12 else ''}"
            )
        new_pyramid = sorted(k for k in info["missing_keys"] if k.startswith("pyramid."))
        if new_pyramid:
            logger.info(f"M2DinoBackbone: feature pyramid initialised ({len(new_pyramid)} weights not in the checkpoint)")
        return (model, info) if want_info else model


def _is_m2dino_folder(path) -> bool:
    config_file = os.path.join(str(path), "config.json")
    if not os.path.isfile(config_file):
        return False
    with open(config_file, encoding="utf-8") as f:
        return json.load(f).get("model_type") == M2DinoConfig.model_type


def allow_local_m2dino_folders_in_auto_backbone():
    """Lets `AutoBackbone.from_pretrained` load a local M2DINO folder.

    transformers 5.x's `AutoBackbone.from_pretrained` asks the Hub whether its argument is a repository before it
    looks on disk (to decide whether it names a timm model): a local folder fails there, with a repo-id validation
    error for an absolute path, or a network error offline. For a local folder holding an M2DINO config this
    skips that question and loads as every other Auto class does; anything else goes to transformers unchanged.
    """
    original = AutoBackbone.from_pretrained.__func__
    if getattr(original, "_m2dino_local_folders", False):
        return

    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        if os.path.isdir(str(pretrained_model_name_or_path)) and _is_m2dino_folder(pretrained_model_name_or_path):
            kwargs.pop("use_timm_backbone", None)
            return _BaseAutoModelClass.from_pretrained.__func__(cls, pretrained_model_name_or_path, *model_args, **kwargs)
        return original(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    from_pretrained._m2dino_local_folders = True
    from_pretrained.__doc__ = original.__doc__
    AutoBackbone.from_pretrained = classmethod(from_pretrained)


__all__ = ["M2DinoBackbone", "M2DinoFeaturePyramid", "PYRAMID_STRIDES", "allow_local_m2dino_folders_in_auto_backbone"]
