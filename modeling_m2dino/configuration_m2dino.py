"""M2DINO configuration: a DINOv3 ViT backbone, a task-conditioned MoE in its last layers, and a task registry."""

from transformers import DINOv3ViTConfig
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .tasks import TaskSpec, default_tasks

ROUTER_MODES = ("task", "token")

# Backbone shapes of the published DINOv3 ViTs (weights are the user's own; nothing here downloads them),
# plus `tiny` for tests and the CPU demo.
PRESETS = {
    "small": dict(hidden_size=384, intermediate_size=1536, num_hidden_layers=12, num_attention_heads=6,
                  num_register_tokens=4, image_size=224),
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 num_register_tokens=4, image_size=224),
    "tiny": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=4, num_attention_heads=4,
                 num_register_tokens=2, image_size=64, num_experts=4, decoder_hidden_size=32),
}


class M2DinoConfig(DINOv3ViTConfig):
    r"""
    Configuration of an M2DINO model: a DINOv3 ViT encoder whose last layers carry a task-conditioned
    Mixture-of-Experts, a registry of tasks, and the widths of the task heads. Defaults give a ViT-S/16-sized
    encoder (DINOv3 ViT-S/16 widths) for the 27 FMC_UIA tasks; see `M2DinoConfig.from_preset` for other sizes.

    Args:
        hidden_size (`int`, *optional*, defaults to 384):
            Width of the encoder's tokens.
        intermediate_size (`int`, *optional*, defaults to 1536):
            Hidden width of every MLP, and of every expert of a MoE layer.
        num_hidden_layers (`int`, *optional*, defaults to 12):
            Encoder layers. One is enough (the heads then all read the same layer).
        num_attention_heads (`int`, *optional*, defaults to 6):
            Attention heads per encoder layer.
        patch_size (`int`, *optional*, defaults to 16):
            Side of a patch in pixels; image sides must be multiples of it.
        image_size (`int`, *optional*, defaults to 224):
            Side of the images the image processor resizes to. RoPE positions are recomputed for any size.
        num_channels (`int`, *optional*, defaults to 3):
            Input channels (the image processor turns grayscale into RGB).
        num_register_tokens (`int`, *optional*, defaults to 4):
            Register tokens after the class token, as in the published DINOv3 ViTs.
        pos_embed_rescale (`float`, *optional*, defaults to `None`):
            Random rescaling of the RoPE coordinates in training mode. DINOv3 pretraining used 2.0; M2DINO turns it
            off so that dense heads see the same geometry in training and evaluation. Set it to re-enable it.
        use_gated_mlp (`bool`, *optional*, defaults to `False`):
            Gated MLPs (ViT-S+/16 and larger DINOv3 models); the experts then are gated MLPs too.
        hidden_act, attention_dropout, initializer_range, layer_norm_eps, rope_theta, query_bias, key_bias,
        value_bias, proj_bias, mlp_bias, layerscale_value, drop_path_rate, pos_embed_shift, pos_embed_jitter:
            The DINOv3 encoder's own settings, with [`DINOv3ViTConfig`]'s defaults.
        num_experts (`int`, *optional*, defaults to 8):
            Experts per MoE layer. Each starts as a copy of the layer's dense MLP when upcycling a DINOv3 checkpoint.
        num_experts_per_tok (`int`, *optional*, defaults to 2):
            Experts each routed unit (an image in `"task"` mode, a token in `"token"` mode) uses: the top-k.
        moe_layers (`list[int]`, *optional*):
            Encoder layer indices whose MLP is a task-conditioned MoE. Defaults to the last six layers, or the last
            half of an encoder with fewer than twelve layers.
        router_mode (`str`, *optional*, defaults to `"task"`):
            `"task"`: a learned table of expert logits per task, so every token of an image uses its task's experts;
            `"token"`: each token is routed from its hidden state plus a learned task embedding.
        norm_topk_prob (`bool`, *optional*, defaults to `True`):
            Renormalise the top-k gate weights to sum to one.
        router_aux_loss_coef (`float`, *optional*, defaults to 0.001):
            Weight of the Switch-style load-balancing loss added to the training loss.
        router_z_loss_coef (`float`, *optional*, defaults to 0.001):
            Weight of the router z-loss (keeps router logits in a stable range).
        output_router_logits (`bool`, *optional*, defaults to `False`):
            Return the router logits of every MoE layer.
        tasks (`list[dict]`, *optional*):
            The task registry, one [`TaskSpec`] dict per task (id, type, classes or points, loss weight, group).
            Defaults to the 27 FMC_UIA tasks. Its order is the order of the router rows: the weights record it and
            loading refuses a `config.json` whose order, ids or types differ.
        default_task (`str`, *optional*):
            The task of a call that names none. Defaults to the first task.
        feature_layers (`list[int]`, *optional*):
            Encoder layers whose outputs form the multi-level feature maps the dense heads read. Defaults to four
            evenly spaced layers ending with the last (each layer once when the encoder has fewer than four).
        decoder_hidden_size (`int`, *optional*, defaults to 128):
            Channel width of the dense heads (segmentation, landmark regression, detection).
        detection_num_queries (`int`, *optional*, defaults to 1):
            Box queries per image of the detection heads.
        image_mean (`list[float]`, *optional*, defaults to `[0.485, 0.456, 0.406]`):
            Per-channel mean the image processor built by `M2DinoImageProcessor.from_config` normalises with
            (transformers' ImageNet mean).
        image_std (`list[float]`, *optional*, defaults to `[0.229, 0.224, 0.225]`):
            Per-channel standard deviation the image processor built by `M2DinoImageProcessor.from_config`
            normalises with (transformers' ImageNet standard deviation).
        out_indices / out_features (*optional*):
            The four encoder stages `M2DinoBackbone` turns into a feature pyramid (strides 4, 8, 16, 32). Default to
            the stages of `feature_layers`.

    Example:

    ```python
    >>> from modeling_m2dino import M2DinoConfig, M2DinoForMultiTask

    >>> config = M2DinoConfig.from_preset("tiny", tasks=[{"id": "lesion", "type": "segmentation", "num_classes": 2}])
    >>> model = M2DinoForMultiTask(config)
    ```
    """

    model_type = "m2dino"
    # Output fields `transformers.Trainer` leaves out of the predictions it gathers for `compute_metrics`: losses,
    # router statistics and per-task dicts whose keys change between batches (`predictions` holds the same per sample).
    keys_to_ignore_at_inference = [
        "task_losses", "task_outputs", "aux_loss", "router_logits", "hidden_states", "attentions", "loss_dict",
        "attention_maps", "indices",
    ]

    num_register_tokens: int = 4
    pos_embed_rescale: float | None = None
    num_experts: int = 8
    num_experts_per_tok: int = 2
    moe_layers: list[int] | None = None
    router_mode: str = "task"
    norm_topk_prob: bool = True
    router_aux_loss_coef: float = 0.001
    router_z_loss_coef: float = 0.001
    output_router_logits: bool = False
    tasks: list[dict] | None = None
    default_task: str | None = None
    feature_layers: list[int] | None = None
    decoder_hidden_size: int = 128
    detection_num_queries: int = 1
    image_mean: list[float] | None = None
    image_std: list[float] | None = None

    def __post_init__(self, **kwargs):
        num_layers = self.num_hidden_layers
        if self.moe_layers is None:
            num_moe = 6 if num_layers >= 12 else num_layers // 2
            self.moe_layers = list(range(num_layers - num_moe, num_layers))
        self.moe_layers = sorted(int(i) for i in self.moe_layers)
        bad = [i for i in self.moe_layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"moe_layers {bad} are outside the encoder's layers 0..{num_layers - 1}")
        if self.router_mode not in ROUTER_MODES:
            raise ValueError(f"router_mode must be one of {ROUTER_MODES}, got {self.router_mode!r}")
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must be between 1 and num_experts ({self.num_experts})"
            )
        if self.feature_layers is None:
            # Four evenly spaced layers ending with the last; fewer (each layer once) when the encoder is shallower.
            self.feature_layers = sorted({max(0, round(num_layers * (i + 1) / 4) - 1) for i in range(4)})
        self.feature_layers = [int(i) for i in self.feature_layers]
        if any(not 0 <= i < num_layers for i in self.feature_layers):
            raise ValueError(f"feature_layers {self.feature_layers} must lie in 0..{num_layers - 1}")
        if self.tasks is None:
            self.tasks = default_tasks()
        if self.default_task is None:
            self.default_task = self.task_ids[0]
        if self.default_task not in self.task_index:
            raise ValueError(f"default_task {self.default_task!r} is not a task of this model; valid: {self.task_ids}")
        if self.image_mean is None:
            self.image_mean = list(IMAGENET_DEFAULT_MEAN)
        if self.image_std is None:
            self.image_std = list(IMAGENET_DEFAULT_STD)
        if all(value is None for value in (kwargs.get("out_indices"), kwargs.get("out_features"), self._out_indices, self._out_features)):
            # M2DinoBackbone's stages default to the feature layers (stage 0 is the embeddings, stage N layer N's output).
            kwargs["out_indices"] = [layer + 1 for layer in self.feature_layers]
        super().__post_init__(**kwargs)

    def __setattr__(self, key, value):
        # `tasks` is stored as plain dicts (what config.json holds) and parsed once here, whenever it is set, so
        # that `task_specs`, `task_ids` and `task_index` never rebuild TaskSpecs from dicts.
        if key == "tasks" and value is not None:
            specs = parse_tasks(value)
            super().__setattr__("_task_specs", specs)
            super().__setattr__("_task_index", {task.id: row for row, task in enumerate(specs)})
            value = [task.to_dict() for task in specs]
        super().__setattr__(key, value)

    def to_dict(self):
        output = super().to_dict()
        for parsed in ("_task_specs", "_task_index"):  # the parsed forms of `tasks`, which is saved
            output.pop(parsed, None)
        return output

    @property
    def task_specs(self) -> list[TaskSpec]:
        """The tasks, in router row order (a new list of the parsed TaskSpecs)."""
        return list(self._task_specs)

    @property
    def task_ids(self) -> list[str]:
        return [task.id for task in self._task_specs]

    @property
    def task_index(self) -> dict[str, int]:
        """Task id -> its router row."""
        return self._task_index

    def task(self, task_id: str) -> TaskSpec:
        if task_id in self._task_index:
            return self._task_specs[self._task_index[task_id]]
        raise ValueError(f"unknown task {task_id!r}; this model's tasks: {', '.join(self.task_ids)}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "M2DinoConfig":
        """A config of a named size (`small`, `base`, `tiny`), with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


def parse_tasks(entries) -> tuple[TaskSpec, ...]:
    """TaskSpecs (or their dicts) -> checked TaskSpecs: at least one, ids unique."""
    specs = tuple(t if isinstance(t, TaskSpec) else TaskSpec.from_dict(dict(t)) for t in entries)
    ids = [t.id for t in specs]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"task ids must be unique; repeated: {duplicates}")
    if not specs:
        raise ValueError("a model needs at least one task")
    return specs


__all__ = ["M2DinoConfig", "PRESETS", "ROUTER_MODES"]
