import pytest
import torch
from conftest import FOUR_TASKS, four_task_batch, tiny_config
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForKeypointDetection,
    AutoModelForObjectDetection,
    AutoModelForSemanticSegmentation,
)

import modeling_m2dino as m2dino


@pytest.fixture(scope="module")
def saved_multitask(tmp_path_factory):
    torch.manual_seed(0)
    model = m2dino.M2DinoForMultiTask(tiny_config()).eval()
    path = tmp_path_factory.mktemp("m2dino")
    model.save_pretrained(path)
    return model, path


@pytest.mark.parametrize("router_mode", ["task", "token"])
def test_mixed_batch_loss_is_finite_and_gradients_reach_exactly_the_used_parts(router_mode):
    torch.manual_seed(0)
    model = m2dino.M2DinoForMultiTask(tiny_config(router_mode=router_mode))
    pixel_values, tasks, labels = four_task_batch()
    # three of the four tasks: the fourth head must receive no gradient
    output = model(pixel_values[:3], labels=labels[:3], tasks=tasks[:3])
    assert torch.isfinite(output.loss)
    assert set(output.task_losses) == set(tasks[:3])
    expected = sum(output.task_losses.values()) + output.aux_loss
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("heads."):
            reached = parameter.grad is not None and parameter.grad.abs().sum() > 0
            assert reached == (name.split(".")[1] in tasks[:3]), name
    router = [p for n, p in model.named_parameters() if ".mlp.router." in n]
    experts = [p for n, p in model.named_parameters() if ".mlp.experts." in n]
    assert router and all(p.grad is not None and p.grad.abs().sum() > 0 for p in router)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in experts)


def test_task_outputs_carry_indices_and_loss_weights_apply(config):
    torch.manual_seed(0)
    pixel_values, tasks, labels = four_task_batch()
    model = m2dino.M2DinoForMultiTask(config).eval()
    output = model(pixel_values, labels=labels, tasks=tasks)
    for index, task in enumerate(tasks):
        assert output.task_outputs[task].indices.tolist() == [index]
    weighted = m2dino.M2DinoForMultiTask(tiny_config(tasks=[dict(t, loss_weight=2.0) for t in config.tasks])).eval()
    weighted.load_state_dict(model.state_dict())
    doubled = weighted(pixel_values, labels=labels, tasks=tasks)
    torch.testing.assert_close(doubled.loss - doubled.aux_loss, 2 * (output.loss - output.aux_loss))


def test_task_ids_and_task_names_are_equivalent(config):
    model = m2dino.M2DinoModel(config).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    by_name = model(pixel_values, tasks=["IUGC", "breast_3cls"]).last_hidden_state
    order = config.task_ids
    by_index = model(pixel_values, task_ids=torch.tensor([order.index("IUGC"), order.index("breast_3cls")]))
    by_index = by_index.last_hidden_state
    torch.testing.assert_close(by_name, by_index)


@pytest.mark.parametrize(
    "auto_class, task, shapes",
    [
        (AutoModel, None, {"last_hidden_state": (2, 7, 32), "pooler_output": (2, 32), "feature_map": (2, 32, 2, 2)}),
        (AutoModelForSemanticSegmentation, "cervix_multi", {"logits": (2, 3, 8, 8)}),
        (AutoModelForImageClassification, "breast_3cls", {"logits": (2, 3)}),
        (AutoModelForObjectDetection, "thyroid_nodule_det", {"logits": (2, 1, 2), "pred_boxes": (2, 1, 4)}),
        (AutoModelForKeypointDetection, "IUGC", {"keypoints": (2, 3, 2), "heatmaps": (2, 3, 4, 4)}),
    ],
)
def test_auto_classes_load_the_right_class_with_documented_shapes(saved_multitask, auto_class, task, shapes, caplog):
    reference, path = saved_multitask
    model = auto_class.from_pretrained(path).eval()
    expected_class = {AutoModel: m2dino.M2DinoModel, AutoModelForSemanticSegmentation: m2dino.M2DinoForSemanticSegmentation,
                      AutoModelForImageClassification: m2dino.M2DinoForImageClassification,
                      AutoModelForObjectDetection: m2dino.M2DinoForObjectDetection,
                      AutoModelForKeypointDetection: m2dino.M2DinoForKeypointDetection}[auto_class]
    assert type(model) is expected_class
    assert "UNEXPECTED" not in caplog.text.upper()
    pixel_values = torch.randn(2, 3, 32, 32)
    output = model(pixel_values, tasks=task) if task else model(pixel_values)
    for key, shape in shapes.items():
        assert tuple(output[key].shape) == shape, key
    if task:
        assert model.served_tasks == [task]
        multi = reference(pixel_values, tasks=task).task_outputs[task]
        for key in shapes:
            torch.testing.assert_close(output[key], multi[key])


def test_save_and_load_round_trip_exactly(saved_multitask):
    model, path = saved_multitask
    loaded = m2dino.M2DinoForMultiTask.from_pretrained(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config.tasks == model.config.tasks


def test_single_type_default_task_and_labels(saved_multitask):
    _, path = saved_multitask
    model = m2dino.M2DinoForImageClassification.from_pretrained(path)
    output = model(torch.randn(2, 3, 32, 32), labels=torch.tensor([0, 2]))
    assert torch.isfinite(output.loss) and output.logits.shape == (2, 3)
    detector = m2dino.M2DinoForObjectDetection.from_pretrained(path)
    targets = [{"class_labels": torch.tensor([0, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.2, 0.3]])},
               {"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}]
    detector.config.detection_num_queries = 3
    several = m2dino.M2DinoForObjectDetection(detector.config)
    output = several(torch.randn(2, 3, 32, 32), labels=targets)
    assert torch.isfinite(output.loss) and output.pred_boxes.shape == (2, 3, 4)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x: m(x, tasks="nope"), "unknown task.*cervix_multi"),
        (lambda m, x: m(x, tasks="cervix_multi", task_ids=torch.tensor([0, 0])), "not both"),
        (lambda m, x: m(x[0]), "batch, channels, height, width"),
        (lambda m, x: m(x[:, :1]), "channels"),
        (lambda m, x: m(torch.full_like(x, float("nan"))), "NaN"),
        (lambda m, x: m(x[..., :24]), "multiple of the patch size"),
        (lambda m, x: m(x, tasks=["cervix_multi"] * 3), "2 task ids"),
        (lambda m, x: m(x, task_ids=torch.tensor([0, 99])), r"task_ids must lie in 0\.\."),
        (lambda m, x: m(x, task_ids=torch.tensor([-1, 0])), r"task_ids must lie in 0\.\."),
        (lambda m, x: m(x, tasks="cervix_multi", labels=[{"mask": torch.full((32, 32), 7)}] * 2), "mask values must lie in"),
        (lambda m, x: m(x, tasks="IUGC", labels=[{"points": torch.full((3, 2), 1.5)}] * 2), r"normalised \(x, y\) in \[0, 1\]"),
        (lambda m, x: m(x, tasks="IUGC", labels=[{"points": torch.full((3, 2), float("nan"))}] * 2), "must be finite"),
        (lambda m, x: m(x, tasks="breast_3cls", labels=[{"class_labels": 5}] * 2), "0..2"),
        (lambda m, x: m(x, tasks="cervix_multi", labels=[{"mask": torch.zeros(8, 8)}] * 2), "shape"),
        (lambda m, x: m(x, tasks="IUGC", labels=[{"points": torch.rand(2, 2)}] * 2), r"shape \(2, 3, 2\)"),
        (lambda m, x: m(x, tasks="thyroid_nodule_det",
                        labels=[{"class_labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.0, 0.1]])}] * 2),
         "positive size"),
        (lambda m, x: m(x, tasks="IUGC", labels=[{"mask": torch.zeros(32, 32)}] * 2), "needs 'points'"),
    ],
)
def test_bad_input_gets_a_clear_error(config, call, message):
    model = m2dino.M2DinoForMultiTask(config)
    with pytest.raises(ValueError, match=message):
        call(model, torch.randn(2, 3, 32, 32))


def test_single_type_class_refuses_other_types_and_mixed_batches(config):
    model = m2dino.M2DinoForSemanticSegmentation(config)
    with pytest.raises(ValueError, match="classification task.*serves segmentation"):
        model(torch.randn(1, 3, 32, 32), tasks="breast_3cls")
    with pytest.raises(ValueError, match="one task per call"):
        model(torch.randn(2, 3, 32, 32), tasks=["cervix_multi", "IUGC"])


def test_integer_images_are_refused_naming_the_image_processor(config):
    # Scaling integer pixels depends on their bit depth: the image processor's job alone, never guessed here.
    model = m2dino.M2DinoModel(config).eval()
    for image in (torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8),
                  torch.randint(0, 4096, (1, 3, 32, 32), dtype=torch.int32)):
        with pytest.raises(ValueError, match=rf"pixel_values is {image.dtype}.*M2DinoImageProcessor.*bits_stored"):
            model(image)
    with pytest.raises(TypeError, match="bits_stored"):
        model(torch.randn(1, 3, 32, 32), bits_stored=12)


def test_checkpoint_with_other_task_shapes_needs_explicit_opt_in(saved_multitask):
    # transformers' policy: a weight of another shape is an error unless ignore_mismatched_sizes=True
    _, path = saved_multitask
    tasks = tiny_config().tasks + [m2dino.TaskSpec("new_task", "classification", num_classes=4).to_dict()]
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        m2dino.M2DinoForMultiTask.from_pretrained(path, tasks=tasks)
    changed = [dict(t, num_classes=7, labels=None) if t["id"] == "breast_3cls" else t for t in tiny_config().tasks]
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        m2dino.M2DinoForMultiTask.from_pretrained(path, tasks=changed)
    model, info = m2dino.M2DinoForMultiTask.from_pretrained(
        path, tasks=changed, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.heads["breast_3cls"].classifier.out_features == 7
    assert {key for key, *_ in info["mismatched_keys"]} == {"heads.breast_3cls.classifier.weight",
                                                           "heads.breast_3cls.classifier.bias"}
    grown, info = m2dino.M2DinoForMultiTask.from_pretrained(
        path, tasks=tasks, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert {k for k in info["missing_keys"] if k.startswith("heads.")} == {
        f"heads.new_task.{name}" for name in ("norm.weight", "norm.bias", "classifier.weight", "classifier.bias")
    }
    assert grown.heads["new_task"].classifier.out_features == 4


def test_router_losses_and_logits(config):
    model = m2dino.M2DinoModel(tiny_config(router_mode="token")).eval()
    output = model(torch.randn(2, 3, 32, 32), tasks=["IUGC", "cervix_multi"], output_router_logits=True)
    assert len(output.router_logits) == len(model.config.moe_layers)
    assert output.router_logits[0].shape == (2, 7, 4) and output.router_logits[0].dtype == torch.float32
    assert m2dino.moe.router_loss(output.router_logits, model.config) > 0
    assert "aux_loss" not in output.keys() and "router_logits" not in model(torch.randn(2, 3, 32, 32)).keys()
    task_model = m2dino.M2DinoModel(config)
    assert task_model(torch.randn(2, 3, 32, 32), output_router_logits=True).router_logits[0].shape == (2, 4)


def test_router_loss_is_added_with_labels_only(config):
    torch.manual_seed(0)
    pixel_values, tasks, labels = four_task_batch()
    model = m2dino.M2DinoForMultiTask(config).eval()
    inference = model(pixel_values, tasks=tasks)
    assert inference.aux_loss is None and inference.router_logits is None
    trained = model(pixel_values, tasks=tasks, labels=labels)
    router_logits = model.m2dino(pixel_values, tasks=tasks, output_router_logits=True).router_logits
    torch.testing.assert_close(trained.aux_loss, m2dino.moe.router_loss(router_logits, config))
    assert trained.router_logits is None  # computed for the loss, returned only when asked for
    asked = model(pixel_values, tasks=tasks, labels=labels, output_router_logits=True)
    assert len(asked.router_logits) == len(config.moe_layers)
    classifier = m2dino.M2DinoForImageClassification(config).eval()
    assert classifier(pixel_values[:2], tasks="breast_3cls").aux_loss is None
    with_labels = classifier(pixel_values[:2], tasks="breast_3cls", labels=torch.tensor([0, 2]))
    assert with_labels.aux_loss > 0 and torch.isfinite(with_labels.loss)


def test_gradient_checkpointing_gives_the_same_gradients(config):
    torch.manual_seed(0)
    pixel_values, tasks, labels = four_task_batch()
    model = m2dino.M2DinoForMultiTask(config)
    model(pixel_values, labels=labels, tasks=tasks).loss.backward()
    reference = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(pixel_values, labels=labels, tasks=tasks).loss.backward()
    for name, grad in reference.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, atol=1e-6, rtol=1e-5)
