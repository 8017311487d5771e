"""The task registry: which tasks a model serves, of which type, with which classes or points.

A task is one small record (`TaskSpec`); the per-type behaviour (head, loss, post-processing) lives in
one module per type (`segmentation.py`, `classification.py`, `detection.py`, `regression.py`), found through
the registry in `task_types.py`, so adding a task is one entry here (or in `EXTRA_TASKS`) and adding a task
type is one module.
"""

from dataclasses import asdict, dataclass, field, fields

from .measurement import MeasurementType  # imported by name: a saved folder's remote code holds it then
from .task_types import TASK_TYPES


@dataclass
class TaskSpec:
    """One task: its id, type and label space.

    `num_classes` counts classes for segmentation (background included), classification and detection;
    `num_points` counts landmarks for regression. `labels` names the classes (or the points).
    `allow_flip` is False for tasks whose label is a position or an orientation, so augmentation never
    mirrors their images. `mirror_pairs` lists landmark index pairs named by image side (left / right
    end), which swap when an image is mirrored.
    """

    id: str
    type: str
    num_classes: int | None = None
    num_points: int | None = None
    labels: list[str] = field(default_factory=list)
    group: str = "other"
    loss_weight: float = 1.0
    allow_flip: bool = True
    mirror_pairs: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        # Ids key the heads' ModuleDict and name adapters and folders: no dots, slashes or spaces.
        if not isinstance(self.id, str) or not self.id or any(c in self.id for c in "./ \\"):
            raise ValueError(f"task id must be a non-empty string without '.', '/', '\\' or spaces, got {self.id!r}")
        if self.type not in TASK_TYPES:
            raise ValueError(f"task {self.id!r}: unknown type {self.type!r}; valid types: {', '.join(TASK_TYPES)}")
        task_type = TASK_TYPES[self.type]
        task_type.check_spec(self)
        count = task_type.count(self)
        self.labels = list(self.labels) if self.labels else task_type.default_labels(count)
        if len(self.labels) != count:
            raise ValueError(f"task {self.id!r}: {len(self.labels)} labels given for {count} classes or points")
        self.mirror_pairs = [[int(i) for i in pair] for pair in self.mirror_pairs]
        if any(len(pair) != 2 or not all(0 <= i < (self.num_points or 0) for i in pair) for pair in self.mirror_pairs):
            raise ValueError(f"task {self.id!r}: mirror_pairs must be pairs of landmark indices, got {self.mirror_pairs}")
        if not self.loss_weight >= 0:
            raise ValueError(f"task {self.id!r}: loss_weight must be >= 0, got {self.loss_weight!r}")

    @property
    def num_outputs(self) -> int:
        return TASK_TYPES[self.type].count(self)

    @classmethod
    def from_dict(cls, entry: dict) -> "TaskSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(entry) - known
        if unknown:
            raise ValueError(f"task entry {entry.get('id', entry)!r}: unknown fields {sorted(unknown)}; valid: {sorted(known)}")
        missing = {"id", "type"} - set(entry)
        if missing:
            raise ValueError(f"task entry {entry!r}: missing fields {sorted(missing)}")
        return cls(**entry)

    def to_dict(self) -> dict:
        return asdict(self)


def _task(id, type, count, labels, group, **options):
    counts = {TASK_TYPES[type].count_field: count} if TASK_TYPES[type].count_field else {}
    return TaskSpec(id=id, type=type, labels=labels, group=group, **counts, **options)


_OCCIPUT = ["OA", "LOA", "LOT", "LOP", "OP", "ROP", "ROT", "ROA"]
_SACRUM = ["SA", "LSA", "LST", "LSP", "SP", "RSP", "RST", "RSA"]

# The 27 tasks of the FMC_UIA 2026 challenge, in the order of the challenge's task table. Ids, types and counts are the
# challenge's; class names and the clinical grouping are this project's (configurable per model).
FMC_UIA_TASKS: tuple[TaskSpec, ...] = (
    _task("FUGC", "regression", 2, ["internal_os", "external_os"], "obstetrics"),
    _task("IUGC", "regression", 3, ["symphysis_superior", "symphysis_inferior", "head_tangent"], "obstetrics"),
    _task("fetal_femur", "regression", 2, ["femur_left_end", "femur_right_end"], "obstetrics", mirror_pairs=[[0, 1]]),
    _task("fetal_head_pos_cls", "classification", 8, _OCCIPUT, "obstetrics", allow_flip=False),
    _task("fetal_plane_cls", "classification", 6, ["abdomen", "brain", "femur", "thorax", "cervix", "other"], "obstetrics"),
    _task("fetal_sacral_pos_cls", "classification", 8, _SACRUM, "obstetrics", allow_flip=False),
    _task("cervix", "segmentation", 2, ["background", "cervix"], "obstetrics"),
    _task("cervix_multi", "segmentation", 3, ["background", "anterior_lip", "posterior_lip"], "obstetrics"),
    _task("fetal_abdomen_multi", "segmentation", 5, ["background", "abdomen", "stomach", "umbilical_vein", "spine"], "obstetrics"),
    _task("fetal_head", "segmentation", 2, ["background", "fetal_head"], "obstetrics"),
    _task("fetal_heart", "segmentation", 2, ["background", "fetal_heart"], "obstetrics"),
    _task("head_symphysis_multi", "segmentation", 3, ["background", "pubic_symphysis", "fetal_head"], "obstetrics"),
    _task("breast_2cls", "classification", 2, ["benign", "malignant"], "breast"),
    _task("breast_3cls", "classification", 3, ["normal", "benign", "malignant"], "breast"),
    _task("breast_lesion", "segmentation", 2, ["background", "lesion"], "breast"),
    _task("lung_2cls", "classification", 2, ["normal", "abnormal"], "lung"),
    _task("lung_disease_3cls", "classification", 3, ["normal", "pneumonia", "covid19"], "lung"),
    _task("lung", "segmentation", 2, ["background", "lung"], "lung"),
    _task("thyroid_nodule_det", "detection", 1, ["nodule"], "thyroid"),
    _task("thyroid_nodule", "segmentation", 2, ["background", "nodule"], "thyroid"),
    _task("cardiac_multi", "segmentation", 4, ["background", "lv_cavity", "myocardium", "left_atrium"], "cardiovascular"),
    _task("carotid_artery", "segmentation", 2, ["background", "carotid_artery"], "cardiovascular"),
    _task("liver_lesion_2cls", "classification", 2, ["benign", "malignant"], "abdomen"),
    _task("organ_cls", "classification", 6, ["liver", "kidney", "spleen", "gallbladder", "bladder", "pancreas"], "abdomen"),
    _task("ovary_tumor", "segmentation", 2, ["background", "tumor"], "gynecology"),
    _task("uterine_fibroid_det", "detection", 1, ["fibroid"], "gynecology"),
    _task("spinal_cord_injury_loc", "detection", 1, ["injury"], "spine"),
)

# Tasks beyond the challenge's 27, served by the same code: the synthetic suite draws them and `m2dino-train --tasks`
# accepts them, but the FMC_UIA runs (`FMC_UIA_TASKS`) leave them out. Adding one is one entry here.
EXTRA_TASKS: tuple[TaskSpec, ...] = (
    # The head circumference of a fetal head, in mm: the measurement type's task.
    TaskSpec(id="fetal_head_circumference", type=MeasurementType.name, labels=["head_circumference_mm"], group="obstetrics"),
)


def known_task(task_id: str) -> TaskSpec | None:
    """The registry's spec of a task id (challenge task or extra task), or None."""
    return next((task for task in FMC_UIA_TASKS + EXTRA_TASKS if task.id == task_id), None)


def default_tasks() -> list[dict]:
    """The FMC_UIA registry as plain dicts, the form `config.json` stores."""
    return [task.to_dict() for task in FMC_UIA_TASKS]


def clinical_groups(tasks) -> dict[str, list[str]]:
    """Group name -> task ids, in registry order."""
    groups: dict[str, list[str]] = {}
    for task in tasks:
        groups.setdefault(task.group, []).append(task.id)
    return groups
