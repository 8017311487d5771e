from .tasks import FMC_UIA_TASKS, TASK_TYPES, TaskSpec, clinical_groups, default_tasks
