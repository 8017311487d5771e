"""M2DINO for transformers: importing this package registers every Auto class."""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForKeypointDetection,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
)

from .backbone_m2dino import M2DinoBackbone, allow_local_m2dino_folders_in_auto_backbone
from .configuration_m2dino import PRESETS, M2DinoConfig
from .image_processing_m2dino import M2DinoImageProcessor
from .modeling_m2dino import (
    TASK_TYPE_IMPLEMENTATIONS,
    M2DinoForImageClassification,
    M2DinoForKeypointDetection,
    M2DinoForMultiTask,
    M2DinoForObjectDetection,
    M2DinoForSemanticSegmentation,
    M2DinoModel,
    M2DinoModelOutput,
    M2DinoMultiTaskOutput,
    M2DinoPreTrainedModel,
)
from .moe import TaskConditionedMoE
from .pipelines_m2dino import (
    M2DinoImageClassificationPipeline,
    M2DinoImageSegmentationPipeline,
    M2DinoObjectDetectionPipeline,
)
from .task_types import TASK_TYPES, TaskType, task_type_of
from .tasks import EXTRA_TASKS, FMC_UIA_TASKS, TaskSpec, clinical_groups, default_tasks, known_task

AutoConfig.register("m2dino", M2DinoConfig, exist_ok=True)
AutoModel.register(M2DinoConfig, M2DinoModel, exist_ok=True)
AutoModelForSemanticSegmentation.register(M2DinoConfig, M2DinoForSemanticSegmentation, exist_ok=True)
AutoModelForImageClassification.register(M2DinoConfig, M2DinoForImageClassification, exist_ok=True)
AutoModelForObjectDetection.register(M2DinoConfig, M2DinoForObjectDetection, exist_ok=True)
AutoModelForKeypointDetection.register(M2DinoConfig, M2DinoForKeypointDetection, exist_ok=True)
AutoBackbone.register(M2DinoConfig, M2DinoBackbone, exist_ok=True)
allow_local_m2dino_folders_in_auto_backbone()
AutoImageProcessor.register(M2DinoConfig, image_processor_classes={"pil": M2DinoImageProcessor}, exist_ok=True)

__all__ = [
    "EXTRA_TASKS",
    "FMC_UIA_TASKS",
    "PRESETS",
    "TASK_TYPES",
    "TASK_TYPE_IMPLEMENTATIONS",
    "M2DinoBackbone",
    "M2DinoConfig",
    "M2DinoForImageClassification",
    "M2DinoForKeypointDetection",
    "M2DinoForMultiTask",
    "M2DinoForObjectDetection",
    "M2DinoForSemanticSegmentation",
    "M2DinoImageClassificationPipeline",
    "M2DinoImageProcessor",
    "M2DinoImageSegmentationPipeline",
    "M2DinoModel",
    "M2DinoModelOutput",
    "M2DinoMultiTaskOutput",
    "M2DinoObjectDetectionPipeline",
    "M2DinoPreTrainedModel",
    "TaskConditionedMoE",
    "TaskSpec",
    "TaskType",
    "clinical_groups",
    "default_tasks",
    "known_task",
    "task_type_of",
]
