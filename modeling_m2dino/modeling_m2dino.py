"""M2DINO: a DINOv3 ViT whose last layers carry a task-conditioned Mixture-of-Experts, and heads per task.

Data flow: pixel values -> DINOv3 embeddings (class, register and patch tokens; RoPE) -> encoder layers, the
MoE layers routing by task -> final norm -> a spatial feature map (and multi-level maps) -> the head of each
sample's task. Task types (segmentation, classification, detection, regression) live one per module.

This module holds the layers and the model classes; the jobs around them have modules of their own: saving the
code beside the weights (`remote_code.py`), the checks of saving and loading (`loading_checks.py`), upcycling
DINOv3 (`upcycling.py`), the all-task fast path (`all_tasks.py`) and pixel scaling (the image processor).
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.dinov3_vit.modeling_dinov3_vit import (
    DINOv3ViTAttention,
    DINOv3ViTEmbeddings,
    DINOv3ViTLayer,
    DINOv3ViTPreTrainedModel,
    DINOv3ViTRopePositionEmbedding,
)
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .all_tasks import encode_all_tasks
from .classification import ClassificationType
from .configuration_m2dino import M2DinoConfig
from .detection import DetectionType
from .loading_checks import check_saved_tasks, record_saved_tasks, refuse_pickle_only_folder
from .moe import M2DinoTaskRouter, TaskConditionedMoE, router_loss
from .per_sample import per_sample_predictions, prediction_layout, unbatch_labels
from .regression import RegressionType
from .remote_code import write_remote_code
from .segmentation import SegmentationType
from .task_types import TASK_TYPES, has_values_outside
from .upcycling import backbone_fields, read_dinov3_checkpoint, upcycled_state

# Type name -> its `TaskType` (the registry of `task_types.py`; the name is kept for code that imported it).
TASK_TYPE_IMPLEMENTATIONS = TASK_TYPES

@dataclass
class M2DinoModelOutput(BaseModelOutputWithPooling):
    """
    feature_map (`torch.FloatTensor` of shape `(batch, hidden_size, height / patch, width / patch)`):
        The normalised patch tokens of the last layer as a spatial map; every head reads it.
    feature_maps (`tuple(torch.FloatTensor)`): the same map at each of `config.feature_layers`, the levels the
        dense heads read.
    router_logits (`tuple(torch.FloatTensor)`): per MoE layer, `(batch, experts)` in `"task"` router mode or
        `(batch, tokens, experts)` in `"token"` mode (with `output_router_logits=True`). The task classes turn
        them into the router loss when they are given labels.
    """

    feature_map: torch.FloatTensor | None = None
    feature_maps: tuple[torch.FloatTensor, ...] | None = None
    router_logits: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class M2DinoMultiTaskOutput(ModelOutput):
    """
    loss: `sum_t loss_weight_t * L_t` over the tasks present, plus the router `aux_loss` (None without labels).
    aux_loss: the routers' load-balancing plus z-loss (`moe.router_loss`), with labels only.
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

    def forward(self, hidden_states, position_embeddings, task_ids=None) -> torch.Tensor:
        hidden_states = self.attend(hidden_states, position_embeddings)
        mlp_input = self.norm2(hidden_states)
        mlp_output = self.mlp(mlp_input, task_ids) if self.is_moe else self.mlp(mlp_input)
        return self.drop_path(self.layer_scale2(mlp_output)) + hidden_states

    def attend(self, hidden_states, position_embeddings):
        """The attention half of the layer, with its residual: it never depends on the task."""
        attended, _ = self.attention(self.norm1(hidden_states), position_embeddings=position_embeddings)
        return self.drop_path(self.layer_scale1(attended)) + hidden_states


class M2DinoEncoder(nn.Module):
    """The encoder layers, run in order. What they produce on the way (each layer's output, attention weights and
    router logits) is recorded by `M2DinoModel.forward` through `_can_record_outputs`, the transformers way."""

    def __init__(self, config: M2DinoConfig):
        super().__init__()
        self.layer = nn.ModuleList(M2DinoLayer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, hidden_states, position_embeddings, task_ids, feature_layers) -> tuple[torch.Tensor, list]:
        """The last layer's output and the outputs of the `feature_layers` (the dense heads' levels)."""
        levels = []
        for index, layer in enumerate(self.layer):
            hidden_states = layer(hidden_states, position_embeddings, task_ids)
            if index in feature_layers:
                levels.append(hidden_states)
        return hidden_states, levels


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
    _can_record_outputs = {
        "hidden_states": M2DinoLayer,
        "attentions": OutputRecorder(DINOv3ViTAttention, index=1),
        "router_logits": OutputRecorder(M2DinoTaskRouter),
    }
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
        for task_type in TASK_TYPES.values():
            if isinstance(module, task_type.head_class):
                task_type.init_head(module, self.config)

    def resolve_task_ids(self, batch_size: int, tasks=None, task_ids=None, device=None) -> torch.LongTensor:
        """Task indices (B,) from `tasks` (an id, or B ids) or `task_ids`; neither means `config.default_task`."""
        if tasks is not None and task_ids is not None:
            raise ValueError("pass either `tasks` (task id strings) or `task_ids` (indices), not both")
        task_index = self.config.task_index
        given = task_ids is not None
        if not given:
            names = [self.config.default_task] if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks)
            unknown = sorted({n for n in names if n not in task_index})
            if unknown:
                raise ValueError(f"unknown task(s) {unknown}; this model's tasks: {', '.join(self.config.task_ids)}")
            if len(names) == 1:
                names = names * batch_size
            task_ids = torch.tensor([task_index[n] for n in names], device=device)
        task_ids = torch.as_tensor(task_ids, device=device)
        if task_ids.dim() == 0:
            task_ids = task_ids.expand(batch_size)
        if task_ids.shape != (batch_size,) or task_ids.is_floating_point():
            raise ValueError(f"expected {batch_size} task ids (one per image), got shape {tuple(task_ids.shape)}")
        # Ids built from checked names need no range check. A check that branches on tensor values reads them back
        # from the device and would break a torch.compile graph: given ids only, in eager mode, in one read.
        if given and not torch.compiler.is_compiling() and has_values_outside(task_ids, 0, len(task_index) - 1):
            raise ValueError(f"task_ids must lie in 0..{len(task_index) - 1}, got {task_ids.tolist()}")
        return task_ids.long()

    @property
    def served_tasks(self) -> list[str]:
        """The ids of the tasks this class has heads for."""
        return [t.id for t in self.config.task_specs if self.task_type in (None, t.type)]

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves weights and config with a full `auto_map` and the model code beside them (`remote_code.py`), so that
        `trust_remote_code=True` loads the folder where this package is not installed.

        Every safetensors file also records, in its metadata, the tasks its router rows belong to (see
        `loading_checks.py`), so that loading can refuse a `config.json` whose task list no longer matches.
        """
        if kwargs.get("safe_serialization") is False:
            raise ValueError("M2DINO saves safetensors only; drop safe_serialization=False")
        write_remote_code(save_directory, self.config)
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            record_saved_tasks(save_directory, self.config.task_specs)

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
        weights are copied exactly and every expert of a MoE layer starts as that layer's dense MLP (see
        `upcycling.py`); the routers and heads start as initialised."""
        dinov3_config, dinov3_state = read_dinov3_checkpoint(path)
        model = cls(M2DinoConfig(**{**backbone_fields(dinov3_config), **config_overrides}))
        backbone = model.get_base_model()
        expected = {k: v.shape for k, v in backbone.state_dict().items() if ".mlp.router." not in k}
        backbone.load_state_dict(upcycled_state(path, dinov3_state, expected, model.config), strict=False)
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
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    @property
    def task_index(self) -> dict[str, int]:
        """Task id -> its router row (`config.task_index`)."""
        return self.config.task_index

    def prepare_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Checks rank, channels, size, type and finiteness, and casts to the weights' dtype.

        The model takes the normalised float pixel values of `M2DinoImageProcessor`. Integer images are refused,
        not scaled: their scaling depends on the bit depth (`bits_stored`), which the image processor handles.
        """
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
            raise ValueError(
                f"pixel_values is {pixel_values.dtype}; the model takes the normalised float pixel values of "
                "M2DinoImageProcessor, which scales integer images by their bit depth: "
                "`processor(images, bits_stored=...)['pixel_values']`"
            )
        if not torch.compiler.is_compiling() and not torch.isfinite(pixel_values).all():
            raise ValueError("pixel_values contains NaN or infinite values")
        return pixel_values.to(self.embeddings.patch_embeddings.weight.dtype)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor,
        tasks: str | list[str] | None = None,
        task_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        output_router_logits: bool | None = None,
    ) -> M2DinoModelOutput:
        r"""
        tasks (`str` or `list[str]`, *optional*):
            The task of every image, or one task id per image; `config.default_task` when neither this nor
            `task_ids` is given. The MoE layers route by it.
        task_ids (`torch.LongTensor` of shape `(batch,)`, *optional*):
            The same as indices into `config.tasks`.

        `output_hidden_states`, `output_attentions`, `output_router_logits` and `return_dict` default to the
        config's; the hidden states are the embeddings' output and each layer's, before the final norm.
        """
        pixel_values = self.prepare_pixel_values(pixel_values)
        batch_size, _, height, width = pixel_values.shape
        task_ids = self.resolve_task_ids(batch_size, tasks, task_ids, device=pixel_values.device)
        hidden_states = self.embeddings(pixel_values)
        position_embeddings = self.rope_embeddings(pixel_values)
        hidden_states, levels = self.model(hidden_states, position_embeddings, task_ids, self.config.feature_layers)
        sequence_output, feature_map, feature_maps = self.spatial_features(hidden_states, levels, (height, width))
        return M2DinoModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=sequence_output[:, 0],
            feature_map=feature_map,
            feature_maps=feature_maps,
        )

    @torch.no_grad()
    def encode_all_tasks(self, pixel_values: torch.Tensor, task_ids: torch.LongTensor, max_images: int = 32):
        """Features of every image for every task in `task_ids`, task-major: (len(task_ids) * batch, ...); equal
        to one call per task, faster (see `all_tasks.py`). An `M2DinoModelOutput` without hidden states or
        attentions."""
        pixel_values = self.prepare_pixel_values(pixel_values)
        sequence_output, feature_map, feature_maps = encode_all_tasks(self, pixel_values, task_ids, max_images)
        return M2DinoModelOutput(
            last_hidden_state=sequence_output, pooler_output=sequence_output[:, 0], feature_map=feature_map,
            feature_maps=feature_maps,
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
        values = raw if isinstance(raw, tuple) else (raw,)
        return dict(zip(impl.output_fields, values[: len(impl.output_fields)])), raw

    @torch.no_grad()
    def predict_all_tasks(self, pixel_values: torch.Tensor, tasks: list[str] | None = None):
        """Every served task's head output for one batch of images: task id -> output object.

        Shares the task-independent trunk (see `M2DinoModel.encode_all_tasks`); equal to one call per task.
        """
        tasks = self.served_tasks if tasks is None else list(tasks)
        index = self.config.task_index
        unknown = [t for t in tasks if t not in index or t not in self.heads]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; this model serves {', '.join(self.served_tasks)}")
        task_ids = torch.tensor([index[t] for t in tasks], device=pixel_values.device)
        outputs = self.m2dino.encode_all_tasks(pixel_values, task_ids)
        batch_size = pixel_values.shape[0]
        results = {}
        for position, task_id in enumerate(tasks):
            task = self.config.task(task_id)
            rows = torch.arange(position * batch_size, (position + 1) * batch_size, device=pixel_values.device)
            fields = self.run_head(task, outputs, rows)[0]
            results[task_id] = TASK_TYPE_IMPLEMENTATIONS[task.type].output_class(**fields)
        return results

    def run_backbone(self, pixel_values, task_ids, with_labels: bool, kwargs: dict):
        """The backbone's features for resolved `task_ids`, the router loss when the call has labels (a training
        loss, so never computed at inference), and the router logits when the call or config asks for them."""
        want_router_logits = kwargs.get("output_router_logits")
        if want_router_logits is None:
            want_router_logits = self.config.output_router_logits
        if with_labels:
            kwargs = {**kwargs, "output_router_logits": True}
        outputs = self.m2dino(pixel_values, task_ids=task_ids, return_dict=True, **kwargs)
        aux_loss = router_loss(outputs.router_logits, self.config) if with_labels and outputs.router_logits else None
        return outputs, aux_loss, outputs.router_logits if want_router_logits else None

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: list[dict] | None = None,
        tasks: str | list[str] | None = None,
        task_ids: torch.LongTensor | None = None,
        original_sizes: torch.LongTensor | None = None,
        **kwargs,
    ) -> M2DinoMultiTaskOutput:
        r"""
        labels (`list[dict]` or `dict`, *optional*):
            One label dict per sample in its task type's form, or their batched form (see the class docstring).
        tasks, task_ids: each image's task (see `M2DinoModel.forward`).
        original_sizes: accepted so that `model(**processor(images))` works; post-processing uses it.

        `output_hidden_states`, `output_attentions`, `output_router_logits` and `return_dict` default to the
        config's.
        """
        batch_size = pixel_values.shape[0]
        task_ids = self.resolve_task_ids(batch_size, tasks, task_ids, device=pixel_values.device)
        outputs, aux_loss, router_logits = self.run_backbone(pixel_values, task_ids, labels is not None, kwargs)
        if isinstance(labels, Mapping):
            labels = unbatch_labels(labels, self.config.task_specs, task_ids)
        if labels is not None and (not isinstance(labels, (list, tuple)) or len(labels) != batch_size):
            raise ValueError(f"M2DinoForMultiTask labels must be a list of {batch_size} dicts, one per sample")
        specs = self.config.task_specs
        image_size = tuple(pixel_values.shape[-2:])
        task_outputs, task_losses = {}, {}
        loss = aux_loss
        for task_index, indices, positions in group_by_task(task_ids, len(specs)):
            task = specs[task_index]
            if task.id not in self.heads:
                raise ValueError(f"{type(self).__name__} has no head for task {task.id!r}; it serves {self.served_tasks}")
            impl = TASK_TYPE_IMPLEMENTATIONS[task.type]
            fields, raw = self.run_head(task, outputs, indices)
            task_outputs[task.id] = impl.output_class(**fields, indices=indices)
            if labels is not None:
                task_labels = impl.stack_labels([labels[i] for i in positions], task, image_size)
                task_labels = impl.check_labels(to_device(task_labels, pixel_values.device), task, len(positions), image_size)
                task_losses[task.id] = impl.loss(raw, task_labels, task)
                weighted = task.loss_weight * task_losses[task.id]
                loss = weighted if loss is None else loss + weighted
        return M2DinoMultiTaskOutput(
            loss=loss,
            task_losses=task_losses if labels is not None else None,
            task_outputs=task_outputs,
            predictions=None if self.training else self.per_sample_predictions(task_outputs, task_ids, outputs, image_size),
            aux_loss=aux_loss,
            router_logits=router_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @torch.no_grad()
    def per_sample_predictions(self, task_outputs, task_ids, outputs: M2DinoModelOutput, image_size) -> dict:
        """`task_outputs` as one row per sample, padded to a layout fixed by the task list (see `per_sample.py`)."""
        served = [task for task in self.config.task_specs if task.id in self.heads]
        layout = prediction_layout(served, self.config, image_size)
        return per_sample_predictions(task_outputs, task_ids, served, layout, outputs.pooler_output.dtype)


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
            unknown = sorted({n for n in names if n not in self.config.task_index})
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

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels=None,
        tasks: str | list[str] | None = None,
        task_ids: torch.LongTensor | None = None,
        original_sizes: torch.LongTensor | None = None,
        **kwargs,
    ):
        # `original_sizes` (from the image processor) is accepted so that `model(**processor(images))` and the
        # pipelines work; post-processing, not the forward pass, uses it.
        if tasks is None and task_ids is None:
            tasks = self.default_task
        batch_size = pixel_values.shape[0]
        image_size = tuple(pixel_values.shape[-2:])
        # Task names are checked in Python, so that a call naming its task has no data-dependent branch (and
        # exports as one graph); only `task_ids` tensors need reading back from the device.
        task = self.single_task(tasks) if task_ids is None else None
        task_ids = self.resolve_task_ids(batch_size, tasks, task_ids, device=pixel_values.device)
        task = task or self.single_task(task_ids)
        outputs, aux_loss, router_logits = self.run_backbone(pixel_values, task_ids, labels is not None, kwargs)
        fields, raw = self.run_head(task, outputs)
        impl = TASK_TYPE_IMPLEMENTATIONS[task.type]
        if labels is not None:
            if isinstance(labels, Mapping):
                labels = impl.stack_labels(unbatch_labels(labels, self.config.task_specs, task_ids), task, image_size)
            labels = impl.check_labels(to_device(labels, pixel_values.device), task, batch_size, image_size)
            loss = impl.loss(raw, labels, task)
            fields["loss"] = loss if aux_loss is None else loss + aux_loss
        return impl.output_class(
            **fields, hidden_states=outputs.hidden_states, attentions=outputs.attentions,
            router_logits=router_logits, aux_loss=aux_loss,
        )


class M2DinoForSemanticSegmentation(M2DinoForSingleTaskType):
    """Segmentation heads; `labels` LongTensor (B, H, W); Dice + cross-entropy; `logits` (B, classes, H/4, W/4)."""

    task_type = SegmentationType.name


class M2DinoForImageClassification(M2DinoForSingleTaskType):
    """Classification heads; `labels` LongTensor (B,); cross-entropy; `logits` (B, classes)."""

    task_type = ClassificationType.name


class M2DinoForObjectDetection(M2DinoForSingleTaskType):
    """Detection heads; `labels` a list of dicts with `class_labels` and normalised (cx, cy, w, h) `boxes`."""

    task_type = DetectionType.name


class M2DinoForKeypointDetection(M2DinoForSingleTaskType):
    """Landmark regression heads; `labels` FloatTensor (B, points, 2) normalised (x, y); L1; `keypoints`."""

    task_type = RegressionType.name


def group_by_task(task_ids: torch.LongTensor, num_tasks: int) -> list[tuple[int, torch.LongTensor, list[int]]]:
    """(task index, batch positions as a tensor and as a list) for each task present, in task order.

    One host sync, unavoidable: each head runs on its task's samples, whose count the host must know to slice."""
    order = task_ids.argsort(stable=True)
    on_host = torch.cat([torch.bincount(task_ids, minlength=num_tasks), order]).tolist()
    counts, positions = on_host[:num_tasks], on_host[num_tasks:]
    groups, start = [], 0
    for task_index, count in enumerate(counts):
        if count:
            groups.append((task_index, order[start : start + count], positions[start : start + count]))
        start += count
    return groups


def to_device(labels, device):
    if torch.is_tensor(labels):
        return labels.to(device)
    if isinstance(labels, dict):
        return {k: to_device(v, device) for k, v in labels.items()}
    if isinstance(labels, (list, tuple)):
        return [to_device(v, device) for v in labels]
    return labels


__all__ = [
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
