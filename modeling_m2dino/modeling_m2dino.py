"""M2DINO: a DINOv3 ViT whose last layers carry a task-conditioned Mixture-of-Experts, and heads per task.

Data flow: pixel values -> DINOv3 embeddings (class, register and patch tokens; RoPE) -> encoder layers, the
MoE layers routing by task -> final norm -> a spatial feature map (and multi-level maps) -> the head of each
sample's task. Task types (segmentation, classification, detection, regression) live one per module.
"""

import json
import os
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from safetensors import safe_open
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.dinov3_vit.modeling_dinov3_vit import (
    DINOv3ViTEmbeddings,
    DINOv3ViTLayer,
    DINOv3ViTPreTrainedModel,
    DINOv3ViTRopePositionEmbedding,
)
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging

from .classification import ClassificationType
from .configuration_m2dino import M2DinoConfig
from .convert_dinov3 import load_dinov3_backbone
from .detection import DetectionType
from .moe import M2DinoTaskRouter, TaskConditionedMoE, load_balancing_loss, router_z_loss
from .per_sample import per_sample_predictions, prediction_layout, unbatch_labels
from .regression import RegressionType
from .segmentation import SegmentationType

logger = hf_logging.get_logger(__name__)

TASK_TYPE_IMPLEMENTATIONS = {impl.name: impl for impl in (SegmentationType, ClassificationType, DetectionType, RegressionType)}

# Every saved folder names all of its entry points, whichever class saved it (transformers writes only its own).
AUTO_MAP = {
    "AutoConfig": "configuration_m2dino.M2DinoConfig",
    "AutoModel": "modeling_m2dino.M2DinoModel",
    "AutoModelForSemanticSegmentation": "modeling_m2dino.M2DinoForSemanticSegmentation",
    "AutoModelForImageClassification": "modeling_m2dino.M2DinoForImageClassification",
    "AutoModelForObjectDetection": "modeling_m2dino.M2DinoForObjectDetection",
    "AutoModelForKeypointDetection": "modeling_m2dino.M2DinoForKeypointDetection",
    "AutoBackbone": "backbone_m2dino.M2DinoBackbone",
}


@dataclass
class M2DinoModelOutput(BaseModelOutputWithPooling):
    """
    feature_map (`torch.FloatTensor` of shape `(batch, hidden_size, height / patch, width / patch)`):
        The normalised patch tokens of the last layer as a spatial map; every head reads it.
    feature_maps (`tuple(torch.FloatTensor)`): the same map at each of `config.feature_layers` (returned when
        `output_feature_maps=True`; the dense heads always use them).
    router_logits (`tuple(torch.FloatTensor)`): per MoE layer, `(batch, experts)` in `"task"` router mode or
        `(batch, tokens, experts)` in `"token"` mode.
    aux_loss (`torch.FloatTensor`): the weighted load-balancing plus z-loss of the routers.
    """

    feature_map: torch.FloatTensor | None = None
    feature_maps: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    aux_loss: torch.FloatTensor | None = None


@dataclass
class M2DinoMultiTaskOutput(ModelOutput):
    """
    loss: `sum_t loss_weight_t * L_t` over the tasks present, plus the router `aux_loss` (None without labels).
    task_losses: task id -> that task's (unweighted) loss (None without labels).
    task_outputs: task id -> its head's output object, whose `indices` are the batch positions of its samples.
    predictions: (eval mode) every head output with one row per sample in batch order and keys fixed by the
        task list, the form `transformers.Trainer` gathers for `compute_metrics` (see `per_sample.py`).
    """

    loss: torch.FloatTensor | None = None
    task_losses: dict[str, torch.FloatTensor] | None = None
    task_outputs: dict[str, ModelOutput] | None = None
    predictions: dict[str, torch.Tensor] | None = None
    aux_loss: torch.FloatTensor | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class M2DinoLayer(DINOv3ViTLayer):
    """A DINOv3 encoder layer whose MLP is a `TaskConditionedMoE` when `layer_idx` is in `config.moe_layers`."""

    def __init__(self, config: M2DinoConfig, layer_idx: int):
        super().__init__(config)
        self.is_moe = layer_idx in config.moe_layers
        if self.is_moe:
            self.mlp = TaskConditionedMoE(config)

    def forward(self, hidden_states, position_embeddings, task_ids, output_attentions: bool = False):
        hidden_states, attention_weights = self.attend(hidden_states, position_embeddings)
        router_logits = None
        if self.is_moe:
            mlp_output, router_logits = self.mlp(self.norm2(hidden_states), task_ids)
        else:
            mlp_output = self.mlp(self.norm2(hidden_states))
        hidden_states = self.drop_path(self.layer_scale2(mlp_output)) + hidden_states
        return hidden_states, attention_weights if output_attentions else None, router_logits

    def attend(self, hidden_states, position_embeddings):
        """The attention half of the layer, with its residual: it never depends on the task."""
        attended, attention_weights = self.attention(self.norm1(hidden_states), position_embeddings=position_embeddings)
        return self.drop_path(self.layer_scale1(attended)) + hidden_states, attention_weights


class M2DinoEncoder(nn.Module):
    def __init__(self, config: M2DinoConfig):
        super().__init__()
        self.layer = nn.ModuleList(M2DinoLayer(config, i) for i in range(config.num_hidden_layers))
        self.gradient_checkpointing = False


class M2DinoPreTrainedModel(DINOv3ViTPreTrainedModel):
    config: M2DinoConfig
    config_class = M2DinoConfig
    base_model_prefix = "m2dino"
    main_input_name = "pixel_values"
    _no_split_modules = ["DINOv3ViTEmbeddings", "M2DinoLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False
    _can_compile_fullgraph = False
    _can_record_outputs = None
    supports_gradient_checkpointing = True
    # The Trainer must not rescale the loss by itself: the model reports the mean loss of its batch.
    accepts_loss_kwargs = False
    # A class that serves fewer tasks than a checkpoint holds skips the other heads without a report.
    _keys_to_ignore_on_load_unexpected = [r"(^|\.)heads\."]
    task_type: str | None = None  # the task type a single-type class serves; None serves every type

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, M2DinoTaskRouter):
            # Small random task logits make tasks start on different experts instead of all tying on the first k.
            if module.mode == "task":
                init.normal_(module.task_logits, std=self.config.initializer_range)
            else:
                init.normal_(module.task_embedding, std=self.config.initializer_range)
        elif isinstance(module, DetectionType.head_class):
            init.normal_(module.queries, std=1.0)

    def use_return_dict(self, return_dict: bool | None) -> bool:
        """`return_dict` of a call, `config.return_dict` when the call does not say."""
        return self.config.return_dict if return_dict is None else return_dict

    @property
    def served_tasks(self) -> list[str]:
        """The ids of the tasks this class has heads for."""
        return [t.id for t in self.config.task_specs if self.task_type in (None, t.type)]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights and config with a full `auto_map`, and copies the model code beside them so that
        `trust_remote_code=True` loads the folder where this package is not installed.

        Every safetensors file also records, in its metadata, the tasks its router rows belong to (see
        `TASKS_METADATA_KEY`), so that loading can refuse a `config.json` whose task list no longer matches.
        """
        if kwargs.get("safe_serialization") is False:
            raise ValueError("M2DINO saves safetensors only; drop safe_serialization=False")
        self.config.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            tasks = json.dumps([[task.id, task.type] for task in self.config.task_specs])
            for name in sorted(os.listdir(save_directory)):
                if name.endswith(".safetensors"):
                    add_safetensors_metadata(os.path.join(save_directory, name), {TASKS_METADATA_KEY: tasks})
        package_dir = os.path.dirname(os.path.abspath(__file__))
        for name in sorted(os.listdir(package_dir)):
            if name.endswith(".py") and name != "__init__.py":
                shutil.copyfile(os.path.join(package_dir, name), os.path.join(save_directory, name))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained` with transformers' loading policy, from safetensors only.

        Weights the checkpoint lacks (new heads, say) are initialised by `_init_weights` and listed in the load
        report and in `output_loading_info`; weights of another shape are an error unless
        `ignore_mismatched_sizes=True`. Two checks are added: a folder whose weights exist only as pickles is
        refused, and a `config.json` whose task ids, order or types disagree with the tasks the weights were
        saved for (their router rows) is refused, naming the tasks.
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("M2DINO loads safetensors only; drop use_safetensors=False")
        kwargs["use_safetensors"] = True
        folder = os.fspath(pretrained_model_name_or_path) if pretrained_model_name_or_path is not None else ""
        if folder and kwargs.get("subfolder"):
            folder = os.path.join(folder, kwargs["subfolder"])
        if os.path.isdir(folder):
            refuse_pickle_only_folder(folder)
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if os.path.isdir(folder):
            check_saved_tasks(folder, model.config)
        return loaded

    @classmethod
    def from_dinov3(cls, path: str, **config_overrides):
        """Upcycles a local DINOv3 ViT checkpoint folder (`config.json` + `model.safetensors`): the backbone
        weights are copied exactly and every expert of a MoE layer starts as that layer's dense MLP."""
        config, backbone_state = load_dinov3_backbone(path, config_class=M2DinoConfig, **config_overrides)
        model = cls(config)
        backbone = model.get_base_model()
        missing, unexpected = backbone.load_state_dict(backbone_state, strict=False)
        not_router = [k for k in missing if ".mlp.router." not in k]
        if not_router or unexpected:  # load_dinov3_backbone has checked this; a mismatch here is a bug
            raise RuntimeError(f"upcycling left backbone weights unset {not_router} or unused {unexpected}")
        model.config.base_model = os.path.abspath(path)
        return model

    def get_base_model(self) -> "M2DinoModel":
        return self if isinstance(self, M2DinoModel) else self.m2dino


class M2DinoModel(M2DinoPreTrainedModel):
    """The M2DINO backbone: DINOv3 ViT with task-conditioned MoE layers; returns features, no task heads."""

    def __init__(self, config: M2DinoConfig):
        super().__init__(config)
        self.embeddings = DINOv3ViTEmbeddings(config)
        self.rope_embeddings = DINOv3ViTRopePositionEmbedding(config)
        self.model = M2DinoEncoder(config)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.task_index = {task_id: i for i, task_id in enumerate(config.task_ids)}
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def resolve_task_ids(self, batch_size: int, tasks=None, task_ids=None, device=None) -> torch.LongTensor:
        """Task indices (B,) from `tasks` (an id, or B ids) or `task_ids`; neither means `config.default_task`."""
        if tasks is not None and task_ids is not None:
            raise ValueError("pass either `tasks` (task id strings) or `task_ids` (indices), not both")
        if task_ids is None:
            names = [self.config.default_task] if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks)
            unknown = sorted({n for n in names if n not in self.task_index})
            if unknown:
                raise ValueError(f"unknown task(s) {unknown}; this model's tasks: {', '.join(self.config.task_ids)}")
            if len(names) == 1:
                names = names * batch_size
            task_ids = torch.tensor([self.task_index[n] for n in names], device=device)
        task_ids = torch.as_tensor(task_ids, device=device)
        if task_ids.dim() == 0:
            task_ids = task_ids.expand(batch_size)
        if task_ids.shape != (batch_size,) or task_ids.is_floating_point():
            raise ValueError(f"expected {batch_size} task ids (one per image), got shape {tuple(task_ids.shape)}")
        # Checks that branch on tensor values would break a torch.compile graph: eager only.
        if not torch.compiler.is_compiling() and task_ids.numel() and (task_ids.min() < 0 or task_ids.max() >= len(self.task_index)):
            raise ValueError(f"task_ids must lie in 0..{len(self.task_index) - 1}, got {task_ids.tolist()}")
        return task_ids.long()

    def prepare_pixel_values(self, pixel_values: torch.Tensor, bits_stored: int | None = None) -> torch.Tensor:
        """Checks rank, channels, size and finiteness. Float pixel values are taken as normalised (the image
        processor's output). Integer images are scaled to [0, 1] by the image processor's own rule
        (`integer_image_to_unit_range`: by `2**bits_stored - 1` when given, else 255 for 8-bit data and 65535 for
        wider integers, values outside that range an error) and normalised with the config's mean and std."""
        if not torch.is_tensor(pixel_values) or pixel_values.dim() != 4:
            shape = tuple(pixel_values.shape) if torch.is_tensor(pixel_values) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a (batch, channels, height, width) tensor, got {shape}")
        if pixel_values.shape[1] != self.config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels, the model expects {self.config.num_channels} "
                "(the image processor turns grayscale into RGB)"
            )
        patch = self.config.patch_size
        if pixel_values.shape[-2] % patch or pixel_values.shape[-1] % patch:
            raise ValueError(f"image size {tuple(pixel_values.shape[-2:])} is not a multiple of the patch size {patch}")
        if not pixel_values.is_floating_point():
            if pixel_values.dtype == torch.bool:
                raise ValueError("pixel_values must be numeric, got torch.bool")
            from .image_processing_m2dino import integer_image_to_unit_range

            mean = torch.tensor(self.config.image_mean, device=pixel_values.device)[:, None, None]
            std = torch.tensor(self.config.image_std, device=pixel_values.device)[:, None, None]
            pixel_values = (integer_image_to_unit_range(pixel_values, bits_stored, "pixel_values") - mean) / std
        elif not torch.compiler.is_compiling() and not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contains NaN or infinite values")
        return pixel_values.to(self.embeddings.patch_embeddings.weight.dtype)

    def forward(
        self,
        pixel_values: torch.Tensor,
        tasks: str | list[str] | None = None,
        task_ids: torch.LongTensor | None = None,
        bits_stored: int | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_router_logits: bool | None = None,
        output_feature_maps: bool = False,
        return_dict: bool | None = None,
    ) -> M2DinoModelOutput | tuple:
        output_router_logits = self.config.output_router_logits if output_router_logits is None else output_router_logits
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        pixel_values = self.prepare_pixel_values(pixel_values, bits_stored)
        batch_size, _, height, width = pixel_values.shape
        task_ids = self.resolve_task_ids(batch_size, tasks, task_ids, device=pixel_values.device)

        hidden_states = self.embeddings(pixel_values)
        position_embeddings = self.rope_embeddings(pixel_values)
        all_hidden_states, all_attentions, router_logits, levels = [], [], [], []
        for index, layer in enumerate(self.model.layer):
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            hidden_states, attention_weights, layer_router_logits = layer(
                hidden_states, position_embeddings=position_embeddings, task_ids=task_ids,
                output_attentions=bool(output_attentions),
            )
            if layer_router_logits is not None:
                router_logits.append(layer_router_logits)
            if output_attentions:
                all_attentions.append(attention_weights)
            if index in self.config.feature_layers:
                levels.append(hidden_states)
        if output_hidden_states:
            all_hidden_states.append(hidden_states)

        sequence_output, feature_map, feature_maps = self.spatial_features(hidden_states, levels, (height, width))
        aux_loss = None
        if router_logits:
            num_experts, top_k = self.config.num_experts, self.config.num_experts_per_tok
            aux_loss = self.config.router_aux_loss_coef * load_balancing_loss(router_logits, num_experts, top_k)
            aux_loss = aux_loss + self.config.router_z_loss_coef * router_z_loss(router_logits)
        output = M2DinoModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=sequence_output[:, 0],
            feature_map=feature_map,
            feature_maps=feature_maps,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
            router_logits=tuple(router_logits) if output_router_logits else None,
            aux_loss=aux_loss,
        )
        return output if self.use_return_dict(return_dict) else output.to_tuple()

    @torch.no_grad()
    def encode_all_tasks(
        self, pixel_values: torch.Tensor, task_ids: torch.LongTensor, bits_stored: int | None = None, max_images: int = 32
    ):
        """Features of every image for every task in `task_ids`, task-major: (len(task_ids) * batch, ...).

        Equal to calling `forward` once per task, but the layers before the first MoE layer and the first MoE
        layer's attention and experts (whose input does not depend on the task) run once for the whole batch;
        only later layers run per task, on at most `max_images` images (a few tasks) at a time: the same result,
        with tensors small enough for the allocator to reuse (glibc maps every block above 32 MB afresh and
        page-faults it in again on each use). Returns an `M2DinoModelOutput` without hidden states or attentions.
        """
        pixel_values = self.prepare_pixel_values(pixel_values, bits_stored)
        batch_size, _, height, width = pixel_values.shape
        first_moe = self.config.moe_layers[0]
        hidden_states = self.embeddings(pixel_values)
        position_embeddings = self.rope_embeddings(pixel_values)
        shared_levels = []
        for index in range(first_moe):
            hidden_states = self.model.layer[index](hidden_states, position_embeddings=position_embeddings, task_ids=None)[0]
            if index in self.config.feature_layers:
                shared_levels.append(hidden_states)
        first = self.model.layer[first_moe]
        attended, _ = first.attend(hidden_states, position_embeddings)
        mixed_all = first.mlp.forward_all_tasks(first.norm2(attended), task_ids)  # (tasks, batch, N, C)
        tasks_per_chunk = max(1, max_images // batch_size)
        chunks = []
        for start in range(0, len(task_ids), tasks_per_chunk):
            chunk, mixed = task_ids[start : start + tasks_per_chunk], mixed_all[start : start + tasks_per_chunk]
            hidden_states = (first.drop_path(first.layer_scale2(mixed)) + attended).flatten(0, 1)
            levels = [level.repeat(len(chunk), 1, 1) for level in shared_levels]  # shared levels, one copy per task
            if first_moe in self.config.feature_layers:
                levels.append(hidden_states)
            per_sample_tasks = chunk.repeat_interleave(batch_size)
            for index in range(first_moe + 1, len(self.model.layer)):
                layer = self.model.layer[index]
                hidden_states = layer(hidden_states, position_embeddings=position_embeddings, task_ids=per_sample_tasks)[0]
                if index in self.config.feature_layers:
                    levels.append(hidden_states)
            chunks.append(self.spatial_features(hidden_states, levels, (height, width)))
        sequence_output = torch.cat([c[0] for c in chunks])
        return M2DinoModelOutput(
            last_hidden_state=sequence_output, pooler_output=sequence_output[:, 0],
            feature_map=torch.cat([c[1] for c in chunks]),
            feature_maps=tuple(torch.cat(maps) for maps in zip(*(c[2] for c in chunks))),
        )

    def spatial_features(self, hidden_states, levels, image_size):
        """The final normalised tokens, their spatial map, and the (normalised) maps of the feature levels."""
        sequence_output = self.norm(hidden_states)
        grid = (image_size[0] // self.config.patch_size, image_size[1] // self.config.patch_size)
        prefix = 1 + self.config.num_register_tokens
        feature_map = self.tokens_to_map(sequence_output, prefix, grid)
        feature_maps = tuple(
            feature_map if level is hidden_states else self.tokens_to_map(self.norm(level), prefix, grid) for level in levels
        )
        return sequence_output, feature_map, feature_maps

    @staticmethod
    def tokens_to_map(tokens: torch.Tensor, num_prefix_tokens: int, grid: tuple[int, int]) -> torch.Tensor:
        patches = tokens[:, num_prefix_tokens:]
        return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[-1], *grid)


class M2DinoForMultiTask(M2DinoPreTrainedModel):
    """M2DINO with a head for every task of `config.tasks`, serving mixed-task batches.

    `labels` is a list of one dict per sample, by its task's type: `{"class_labels": int}`, `{"mask": (H, W)}`
    at the processed size, `{"class_labels": (n,), "boxes": (n, 4)}` normalised (cx, cy, w, h), or
    `{"points": (P, 2)}` normalised (x, y); or the same as one dict of batched tensors (`per_sample.batch_labels`,
    the form `transformers.Trainer` keeps per sample when it gathers labels for `compute_metrics`).
    """

    def __init__(self, config: M2DinoConfig):
        super().__init__(config)
        self.m2dino = M2DinoModel(config)
        self.heads = nn.ModuleDict(
            {
                task.id: TASK_TYPE_IMPLEMENTATIONS[task.type].head_class(config, task)
                for task in config.task_specs
                if self.task_type in (None, task.type)
            }
        )
        self.post_init()

    def run_head(self, task, outputs: M2DinoModelOutput, indices: torch.Tensor | None = None):
        """The head of `task` on the samples at `indices` (all when None): its output fields and raw output."""
        impl = TASK_TYPE_IMPLEMENTATIONS[task.type]
        feature_maps, pooled = outputs.feature_maps, outputs.pooler_output
        if indices is not None:
            feature_maps = tuple(level.index_select(0, indices) for level in feature_maps)
            pooled = pooled.index_select(0, indices)
        raw = self.heads[task.id](feature_maps, pooled)
        fields = (impl.output_field,) if isinstance(impl.output_field, str) else impl.output_field
        values = (raw,) if isinstance(impl.output_field, str) else raw
        return dict(zip(fields, values)), raw

    @torch.no_grad()
    def predict_all_tasks(self, pixel_values: torch.Tensor, tasks: list[str] | None = None, bits_stored: int | None = None):
        """Every served task's head output for one batch of images: task id -> output object.

        Shares the task-independent trunk (see `M2DinoModel.encode_all_tasks`); equal to one call per task.
        """
        tasks = self.served_tasks if tasks is None else list(tasks)
        index = self.m2dino.task_index
        unknown = [t for t in tasks if t not in index or t not in self.heads]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model serves {', '.join(self.served_tasks)}")
        task_ids = torch.tensor([index[t] for t in tasks], device=pixel_values.device)
        outputs = self.m2dino.encode_all_tasks(pixel_values, task_ids, bits_stored)
        batch_size = pixel_values.shape[0]
        specs = {t.id: t for t in self.config.task_specs}
        results = {}
        for position, task_id in enumerate(tasks):
            rows = torch.arange(position * batch_size, (position + 1) * batch_size, device=pixel_values.device)
            fields = self.run_head(specs[task_id], outputs, rows)[0]
            results[task_id] = TASK_TYPE_IMPLEMENTATIONS[specs[task_id].type].output_class(**fields)
        return results

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: list[dict] | None = None,
        tasks: str | list[str] | None = None,
        task_ids: torch.LongTensor | None = None,
        bits_stored: int | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_router_logits: bool | None = None,
        original_sizes: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ) -> M2DinoMultiTaskOutput | tuple:
        outputs = self.m2dino(
            pixel_values, tasks=tasks, task_ids=task_ids, bits_stored=bits_stored,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            output_router_logits=output_router_logits, return_dict=True,
        )
        batch_size = pixel_values.shape[0]
        task_ids = self.m2dino.resolve_task_ids(batch_size, tasks, task_ids, device=pixel_values.device)
        if isinstance(labels, Mapping):
            labels = unbatch_labels(labels, self.config.task_specs, task_ids)
        if labels is not None and (not isinstance(labels, (list, tuple)) or len(labels) != batch_size):
            raise ValueError(f"M2DinoForMultiTask labels must be a list of {batch_size} dicts, one per sample")
        specs = self.config.task_specs
        image_size = tuple(pixel_values.shape[-2:])
        task_outputs, task_losses = {}, {}
        loss = outputs.aux_loss if labels is not None else None
        for task_index in torch.unique(task_ids).tolist():
            task = specs[task_index]
            if task.id not in self.heads:
                raise ValueError(f"{type(self).__name__} has no head for task {task.id!r}; it serves {self.served_tasks}")
            indices = (task_ids == task_index).nonzero().squeeze(1)
            fields, raw = self.run_head(task, outputs, indices)
            task_outputs[task.id] = TASK_TYPE_IMPLEMENTATIONS[task.type].output_class(**fields, indices=indices)
            if labels is not None:
                impl = TASK_TYPE_IMPLEMENTATIONS[task.type]
                task_labels = impl.stack_labels([labels[i] for i in indices.tolist()], task, image_size)
                task_labels = impl.check_labels(to_device(task_labels, pixel_values.device), task, len(indices), image_size)
                task_losses[task.id] = impl.loss(raw, task_labels, task)
                weighted = task.loss_weight * task_losses[task.id]
                loss = weighted if loss is None else loss + weighted
        output = M2DinoMultiTaskOutput(
            loss=loss,
            task_losses=task_losses if labels is not None else None,
            task_outputs=task_outputs,
            predictions=None if self.training else self.per_sample_predictions(task_outputs, task_ids, outputs, image_size),
            aux_loss=outputs.aux_loss,
            router_logits=outputs.router_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if self.use_return_dict(return_dict) else output.to_tuple()


    @torch.no_grad()
    def per_sample_predictions(self, task_outputs, task_ids, outputs: M2DinoModelOutput, image_size) -> dict:
        """`task_outputs` as one row per sample, padded to a layout fixed by the task list (see `per_sample.py`)."""
        served = [task for task in self.config.task_specs if task.id in self.heads]
        # Cached per image size and task list (a task added later changes it); not part of the model's state.
        layouts = self.__dict__.setdefault("_prediction_layouts", {})
        key = (image_size, tuple((task.id, task.type, task.num_outputs) for task in served))
        if key not in layouts:
            layouts[key] = prediction_layout(self.run_head, served, TASK_TYPE_IMPLEMENTATIONS, outputs)
        return per_sample_predictions(
            task_outputs, task_ids, served, TASK_TYPE_IMPLEMENTATIONS, layouts[key], outputs.pooler_output.dtype
        )


class M2DinoForSingleTaskType(M2DinoForMultiTask):
    """Base of the single-type classes: one task per call, HF-conventional outputs of that type."""

    def __init__(self, config: M2DinoConfig):
        if config.default_task not in config.task_ids:  # set after the config's own check, e.g. by from_pretrained kwargs
            raise ValueError(f"default_task {config.default_task!r} is not a task of this model; valid: {config.task_ids}")
        if not any(t.type == self.task_type for t in config.task_specs):
            raise ValueError(
                f"{type(self).__name__} needs at least one {self.task_type} task; the config's tasks are "
                f"{[(t.id, t.type) for t in config.task_specs]}"
            )
        super().__init__(config)
        self.sync_labels()

    @property
    def default_task(self) -> str:
        """`config.default_task` when this class serves it, else the first task of its type."""
        served = self.served_tasks
        return self.config.default_task if self.config.default_task in served else served[0]

    @default_task.setter
    def default_task(self, task_id: str):
        if task_id not in self.served_tasks:
            raise ValueError(f"{type(self).__name__} serves {', '.join(self.served_tasks)}; got default task {task_id!r}")
        self.config.default_task = task_id
        self.sync_labels()

    def sync_labels(self):
        """`config.id2label` / `label2id` from the default task's class names: the names pipelines print."""
        labels = self.config.task(self.default_task).labels
        self.config.id2label = dict(enumerate(labels))
        self.config.label2id = {name: index for index, name in enumerate(labels)}

    def single_task(self, tasks: str | list[str] | torch.LongTensor):
        """The one task of a call, from its task id string(s) or task index tensor."""
        specs = self.config.task_specs
        if torch.is_tensor(tasks):
            names = [specs[i].id for i in torch.unique(tasks).tolist()]
        else:
            names = [tasks] if isinstance(tasks, str) else list(dict.fromkeys(tasks))
            unknown = sorted({n for n in names if n not in self.m2dino.task_index})
            if unknown:
                raise ValueError(f"unknown task(s) {unknown}; this model's tasks: {', '.join(self.config.task_ids)}")
        if len(names) != 1:
            raise ValueError(
                f"{type(self).__name__} serves one task per call, got {names}; use M2DinoForMultiTask for mixed batches"
            )
        task = self.config.task(names[0])
        if task.type != self.task_type:
            raise ValueError(
                f"task {task.id!r} is a {task.type} task; {type(self).__name__} serves {self.task_type} tasks: "
                f"{', '.join(self.served_tasks)}"
            )
        return task

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels=None,
        tasks: str | list[str] | None = None,
        task_ids: torch.LongTensor | None = None,
        bits_stored: int | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_router_logits: bool | None = None,
        original_sizes: torch.LongTensor | None = None,
        return_dict: bool | None = None,
    ):
        # `original_sizes` (from the image processor) is accepted so that `model(**processor(images))` and the
        # pipelines work; post-processing, not the forward pass, uses it.
        if tasks is None and task_ids is None:
            tasks = self.default_task
        batch_size = pixel_values.shape[0]
        # Task names are resolved in Python, so that a call naming its task has no data-dependent branch (and
        # exports as one graph); only `task_ids` tensors need reading back from the device.
        if task_ids is None:
            task = self.single_task(tasks)
        else:
            task = self.single_task(self.m2dino.resolve_task_ids(batch_size, None, task_ids, device=pixel_values.device))
        outputs = self.m2dino(
            pixel_values, tasks=tasks, task_ids=task_ids, bits_stored=bits_stored,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions,
            output_router_logits=output_router_logits, return_dict=True,
        )
        fields, raw = self.run_head(task, outputs)
        impl = TASK_TYPE_IMPLEMENTATIONS[task.type]
        if labels is not None:
            if isinstance(labels, Mapping):
                task_index = torch.full((batch_size,), self.config.task_ids.index(task.id), device=pixel_values.device)
                labels = impl.stack_labels(unbatch_labels(labels, self.config.task_specs, task_index), task, tuple(pixel_values.shape[-2:]))
            labels = impl.check_labels(to_device(labels, pixel_values.device), task, batch_size, tuple(pixel_values.shape[-2:]))
            loss = impl.loss(raw, labels, task)
            fields["loss"] = loss if outputs.aux_loss is None else loss + outputs.aux_loss
        output = impl.output_class(
            **fields, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            router_logits=outputs.router_logits, aux_loss=outputs.aux_loss,
        )
        return output if self.use_return_dict(return_dict) else output.to_tuple()


class M2DinoForSemanticSegmentation(M2DinoForSingleTaskType):
    """Segmentation heads; `labels` LongTensor (B, H, W); Dice + cross-entropy; `logits` (B, classes, H/4, W/4)."""

    task_type = "segmentation"


class M2DinoForImageClassification(M2DinoForSingleTaskType):
    """Classification heads; `labels` LongTensor (B,); cross-entropy; `logits` (B, classes)."""

    task_type = "classification"


class M2DinoForObjectDetection(M2DinoForSingleTaskType):
    """Detection heads; `labels` a list of dicts with `class_labels` and normalised (cx, cy, w, h) `boxes`."""

    task_type = "detection"


class M2DinoForKeypointDetection(M2DinoForSingleTaskType):
    """Landmark regression heads; `labels` FloatTensor (B, points, 2) normalised (x, y); L1; `keypoints`."""

    task_type = "regression"


# Safetensors metadata entry: JSON list of [task id, task type], one per router row, in row order.
TASKS_METADATA_KEY = "m2dino_tasks"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def add_safetensors_metadata(path: str, entries: dict[str, str]):
    """Adds string `entries` to the metadata of the safetensors file at `path` (rewritten atomically).

    Only the JSON header changes; the tensor bytes are copied as they are (their offsets are relative to the
    end of the header).
    """
    with open(path, "rb") as source:
        header_size = struct.unpack("<Q", source.read(8))[0]
        header = json.loads(source.read(header_size))
        header["__metadata__"] = {**header.get("__metadata__", {}), **entries}
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # safetensors keeps the data start 8-byte aligned
        staging = f"{path}.tmp-{os.getpid()}"
        with open(staging, "wb") as target:
            target.write(struct.pack("<Q", len(encoded)))
            target.write(encoded)
            shutil.copyfileobj(source, target, 16 * 1024 * 1024)
    shutil.copymode(path, staging)
    os.replace(staging, path)


def refuse_pickle_only_folder(folder: str):
    """Raises when `folder` holds pickled weights but no safetensors file, naming the file and the conversion."""
    if not os.path.isdir(folder):
        return
    names = sorted(os.listdir(folder))
    if any(name.endswith(".safetensors") or name.endswith(".safetensors.index.json") for name in names):
        return
    pickles = [name for name in names if name.endswith(_PICKLE_SUFFIXES)]
    if pickles:
        path = os.path.join(folder, pickles[0])
        raise OSError(
            f"{path} is a pickle, and M2DINO loads safetensors only (a pickle can run arbitrary code). Convert it "
            f"where you trust it: `from safetensors.torch import save_file; import torch; "
            f"save_file(torch.load({path!r}, weights_only=True), {os.path.join(folder, 'model.safetensors')!r})`, "
            "then remove the pickle."
        )


def saved_tasks(folder: str) -> list[tuple[str, str]] | None:
    """The (task id, task type) per router row recorded in the safetensors metadata of `folder`, or None
    when the weights predate that record."""
    names = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
    for name in names:
        with safe_open(os.path.join(folder, name), framework="pt") as weights:
            recorded = (weights.metadata() or {}).get(TASKS_METADATA_KEY)
        if recorded is not None:
            return [tuple(entry) for entry in json.loads(recorded)]
    return None


def check_saved_tasks(folder: str, config: M2DinoConfig):
    """Refuses a config whose tasks disagree with those the weights in `folder` were saved for.

    Router rows are stored by position and heads by task id: a reordered, renamed or re-typed task list would
    give every image another task's experts or head without any shape changing.
    """
    recorded = saved_tasks(folder)
    if recorded is None:
        logger.warning(f"{folder}: the weights record no task list (saved by an older M2DINO); task order unchecked")
        return
    current = [(task.id, task.type) for task in config.task_specs]
    recorded_types = dict(recorded)
    retyped = [f"{task_id!r} ({recorded_types[task_id]} in the weights, {kind} in the config)"
               for task_id, kind in current if task_id in recorded_types and recorded_types[task_id] != kind]
    if retyped:
        raise ValueError(f"{folder}: config.json changes the type of task(s) {', '.join(retyped)}")
    if len(recorded) == len(current) and recorded != current:
        rows = [f"row {row}: {old!r} in the weights, {new!r} in the config"
                for row, ((old, _), (new, _)) in enumerate(zip(recorded, current)) if old != new]
        raise ValueError(
            f"{folder}: the task list of config.json does not match the router rows of the weights ({'; '.join(rows)}). "
            f"The weights were saved for tasks {[task_id for task_id, _ in recorded]} in that order; restore that "
            "order in config.json (or pass `tasks=` in that order)."
        )


def to_device(labels, device):
    if torch.is_tensor(labels):
        return labels.to(device)
    if isinstance(labels, dict):
        return {k: to_device(v, device) for k, v in labels.items()}
    if isinstance(labels, (list, tuple)):
        return [to_device(v, device) for v in labels]
    return labels


__all__ = [
    "AUTO_MAP",
    "M2DinoForImageClassification",
    "M2DinoForKeypointDetection",
    "M2DinoForMultiTask",
    "M2DinoForObjectDetection",
    "M2DinoForSemanticSegmentation",
    "M2DinoModel",
    "M2DinoModelOutput",
    "M2DinoMultiTaskOutput",
    "M2DinoPreTrainedModel",
    "TASK_TYPE_IMPLEMENTATIONS",
]
