import pytest
import torch

import modeling_m2dino as m2dino
from common_tests import register_transformers_test_marks


def pytest_configure(config):
    register_transformers_test_marks(config)


# One task of every type: enough to exercise every head while keeping models tiny.
FOUR_TASKS = ["cervix_multi", "breast_3cls", "thyroid_nodule_det", "IUGC"]


def tiny_config(**overrides):
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in FOUR_TASKS]
    settings = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                    num_register_tokens=2, image_size=32, num_experts=4, decoder_hidden_size=16, tasks=tasks,
                    default_task="cervix_multi")
    settings.update(overrides)
    return m2dino.M2DinoConfig(**settings)


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids OpenMP oversubscription stalls (every 2-thread
    region can wait a scheduler slice). Use it per module: `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def four_task_batch(size=32, seed=0):
    """Pixel values, task names and multi-task labels: one sample of each task type."""
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(4, 3, size, size, generator=generator)
    labels = [
        {"mask": torch.randint(0, 3, (size, size), generator=generator)},
        {"class_labels": 2},
        {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.4, 0.5, 0.3, 0.2]])},
        {"points": torch.rand(3, 2, generator=generator)},
    ]
    return pixel_values, list(FOUR_TASKS), labels
