"""m2dino-advise: the lookahead affinity, the grouping rule, and the groups file it writes."""

import json
import time

import numpy as np
import pytest
import torch

import modeling_m2dino as m2dino
from m2dino_training import advise, train

from conftest import tiny_config

TWINS = ["breast_2cls", "lung_2cls"]  # two binary classification tasks, made identical below
PROBE = dict(probe_steps=4, lookahead_every=2, lookahead_batch_size=4, batch_size=8, image_size=32, synthetic_scale=0.05)
# the measurement task is one of `EXTRA_TASKS`: the advisor takes any registered task, not only the challenge's 27
PROBE_TASKS = ["breast_2cls", "breast_lesion", "lung_2cls", "fetal_head_circumference"]


def twin_model_and_batch(size=32, per_task=4):
    """A tiny model whose two classification tasks have the same head and the same examples, plus a third task."""
    tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in TWINS + ["cervix_multi"]]
    torch.manual_seed(0)
    model = m2dino.M2DinoForMultiTask(tiny_config(tasks=tasks, default_task="breast_2cls"))
    model.heads["lung_2cls"].load_state_dict(model.heads["breast_2cls"].state_dict())
    twin, original = model.config.task_ids.index("lung_2cls"), model.config.task_ids.index("breast_2cls")
    with torch.no_grad():  # and the same experts: the task router's row of one twin copies the other's
        for index in model.config.moe_layers:
            logits = model.m2dino.model.layer[index].mlp.router.task_logits
            logits[twin] = logits[original]
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(per_task, 3, size, size, generator=generator)
    classes = torch.randint(0, 2, (per_task,), generator=generator).tolist()
    masks = torch.randint(0, 3, (per_task, size, size), generator=generator)
    batch = {
        "pixel_values": torch.cat([images, images, torch.randn(per_task, 3, size, size, generator=generator)]),
        "tasks": ["breast_2cls"] * per_task + ["lung_2cls"] * per_task + ["cervix_multi"] * per_task,
        "labels": [{"class_labels": c} for c in classes] * 2 + [{"mask": m} for m in masks],
    }
    return model, batch


@pytest.mark.parametrize("with_adam_moments", [False, True])
def test_identical_tasks_have_the_same_positive_affinity_as_each_task_with_itself(with_adam_moments):
    model, batch = twin_model_and_batch()
    order = TWINS + ["cervix_multi"]
    moments = None
    if with_adam_moments:  # the probe's case: the optimizer has taken steps and holds second moments
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(**batch).loss.backward()
        optimizer.step()
        moments = advise.adam_second_moments(optimizer, advise.shared_parameters(model).values())
        assert len(moments) > 0
    model.train()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    affinity = advise.lookahead_affinity(model, batch, order, step_size=1e-3, second_moments=moments)
    assert affinity.shape == (3, 3) and np.all(np.isfinite(affinity))
    assert affinity[0, 0] > 0 and affinity[1, 1] > 0 and affinity[2, 2] > 0  # a task's own step lowers its loss
    # Same head, same examples: a step on one twin is a step on the other.
    assert affinity[0, 1] == pytest.approx(affinity[0, 0], rel=1e-4)
    assert affinity[1, 0] == pytest.approx(affinity[1, 1], rel=1e-4)
    assert affinity[0, 1] > 0 and affinity[1, 0] > 0
    assert model.training, "the model's mode is restored"
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), f"{name} changed by the lookahead"


def test_a_batch_without_one_of_the_tasks_is_named():
    model, batch = twin_model_and_batch()
    with pytest.raises(ValueError, match=r"no examples of task\(s\) \['IUGC'\]"):
        advise.lookahead_affinity(model, batch, TWINS + ["IUGC"], step_size=1e-3)


def noisy_steps(mean: np.ndarray, noise: float = 0.05, steps: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return mean[None] + noise * rng.standard_normal((steps, *mean.shape))


def alternating_steps(mean: np.ndarray, noise: float, steps: int = 12) -> np.ndarray:
    """Steps of `mean` +- `noise` in turn: the mean is exact and the noise known."""
    signs = np.where(np.arange(steps) % 2 == 0, 1.0, -1.0)
    return mean[None] + noise * signs[:, None, None]


def test_tasks_with_positive_mutual_affinity_group_and_conflicting_blocks_split():
    tasks = ["a", "b", "c", "d"]
    mean = np.array([[1.0, 0.5, -0.5, -0.4], [0.6, 1.0, -0.3, -0.5], [-0.5, -0.5, 1.0, 0.4], [-0.4, -0.6, 0.5, 1.0]])
    proposal = advise.propose_groups(tasks, noisy_steps(mean), {t: 100 for t in tasks})
    assert proposal["groups"] == {"advised_1": ["a", "b"], "advised_2": ["c", "d"]}
    mutual = np.array(proposal["mutual_affinity"])
    assert mutual[0, 1] > 0 and mutual[0, 2] < 0 and np.allclose(mutual, mutual.T)
    assert proposal["data_poor_tasks"] == [] and proposal["unscored_tasks"] == []


def test_a_starting_grouping_changes_only_where_the_evidence_is_significant():
    tasks = ["a", "b", "c", "d", "e"]
    # a-b: a clear conflict; c-d: a weak conflict, within the noise; e: clearly helps and is helped by d.
    mean = np.array([[1.0, -0.8, 0.0, 0.0, 0.0], [-0.8, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -0.05, 0.0],
                     [0.0, 0.0, -0.05, 1.0, 0.6], [0.0, 0.0, 0.0, 0.6, 1.0]])
    n_train = {t: 100 for t in tasks}
    proposal = advise.propose_groups(tasks, alternating_steps(mean, noise=0.3), n_train, start=[["a", "b"], ["c", "d"], ["e"]])
    # a leaves b (significant); c and d stay together (-0.05 is noise at +-0.3); {c, d} and e have a
    # significantly positive mean (+0.3) but c would be negative in {c, d, e}, so e stays alone.
    assert proposal["groups"] == {"advised_1": ["a"], "advised_2": ["b"], "advised_3": ["c", "d"], "advised_4": ["e"]}
    reasons = {d["name"]: d["reason"] for d in proposal["details"]}
    assert reasons["advised_1"] == "alone: significantly negative affinity with the rest of its group"
    assert reasons["advised_3"] == "kept: no significant affinity against it"
    # the same measurements from singletons: only d and e, significantly positive, merge
    alone = advise.propose_groups(tasks, alternating_steps(mean, noise=0.3), n_train)
    assert alone["groups"] == {"advised_1": ["a"], "advised_2": ["b"], "advised_3": ["c"], "advised_4": ["d", "e"]}
    assert {d["name"]: d["reason"] for d in alone["details"]}["advised_4"] == "significantly positive mutual affinity"
    # noise that drowns every affinity leaves the starting grouping as it was
    noisy = advise.propose_groups(tasks, alternating_steps(mean * 0.01 + np.eye(5), noise=0.3), n_train,
                                  start=[["a", "b"], ["c", "d"], ["e"]])
    assert noisy["groups"] == {"advised_1": ["a", "b"], "advised_2": ["c", "d"], "advised_3": ["e"]}
    with pytest.raises(ValueError, match="exactly once"):
        advise.propose_groups(tasks, alternating_steps(mean, noise=0.3), n_train, start=[["a", "b"], ["c"]])


def test_a_merge_that_leaves_a_member_negative_is_refused():
    # a and b help each other a lot; c helps a but hurts b more: {a, b, c} has a positive total, but c's mean
    # affinity with the rest is negative, so c stays out.
    tasks = ["a", "b", "c"]
    mean = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, -0.5], [0.2, -0.5, 1.0]])
    proposal = advise.propose_groups(tasks, noisy_steps(mean, noise=0.01), {t: 100 for t in tasks})
    assert proposal["groups"] == {"advised_1": ["a", "b"], "advised_2": ["c"]}
    assert proposal["details"][1]["reason"].startswith("alone")


def test_data_poor_tasks_join_the_largest_pool_unless_their_affinity_is_significantly_negative():
    tasks = ["rich1", "rich2", "poor_neutral", "poor_conflict", "rich_alone"]
    mean = np.array([
        [1.0, 0.5, -0.01, -0.6, -0.3],
        [0.5, 1.0, -0.01, -0.6, -0.3],
        [-0.01, -0.01, 1.0, -0.6, -0.01],
        [-0.6, -0.6, -0.6, 1.0, -0.6],
        [-0.3, -0.3, -0.01, -0.6, 1.0],
    ])
    n_train = {"rich1": 400, "rich2": 300, "poor_neutral": 20, "poor_conflict": 20, "rich_alone": 300}
    proposal = advise.propose_groups(tasks, alternating_steps(mean, noise=0.1), n_train, data_poor_fraction=0.5)
    assert proposal["data_poor_tasks"] == ["poor_neutral", "poor_conflict"]
    assert proposal["data_poor_threshold"] == 150
    # poor_neutral: slightly negative, within the noise, to both {rich1, rich2} (700 examples) and rich_alone (300): the larger pool
    assert proposal["groups"] == {"advised_1": ["rich1", "rich2", "poor_neutral"], "advised_2": ["poor_conflict"],
                                  "advised_3": ["rich_alone"]}
    reasons = {d["name"]: d["reason"] for d in proposal["details"]}
    assert "data-poor poor_neutral joined" in reasons["advised_1"]
    assert "significantly negative" in reasons["advised_2"]


def test_a_task_whose_own_step_does_not_help_it_is_unscored_and_neutral():
    tasks = ["a", "b", "c"]
    mean = np.array([[1.0, 0.5, 5.0], [0.5, 1.0, 5.0], [0.3, 0.3, -0.2]])  # c's own step raises its loss
    proposal = advise.propose_groups(tasks, noisy_steps(mean, noise=0.01), {t: 100 for t in tasks})
    assert proposal["unscored_tasks"] == ["c"]
    relative = np.array(proposal["relative_affinity"])
    assert np.all(relative[:, 2] == 0)  # what others do to c is not scored
    # c's steps still help a and b (its row is scored), so c joins them
    assert proposal["groups"] == {"advised_1": ["a", "b", "c"]}
    assert np.array(proposal["mutual_affinity"])[0, 2] == pytest.approx(0.3 / 2, abs=0.01)


def test_propose_groups_names_bad_input():
    with pytest.raises(ValueError, match=r"shape \(steps >= 1, 2, 2\)"):
        advise.propose_groups(["a", "b"], np.zeros((3, 3)), {"a": 1, "b": 1})
    with pytest.raises(ValueError, match=r"n_train lacks task\(s\) \['b'\]"):
        advise.propose_groups(["a", "b"], np.zeros((1, 2, 2)), {"a": 1})


@pytest.fixture(scope="module")
def probe_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("advice")
    start = time.perf_counter()
    report = advise.advise("synthetic", PROBE_TASKS, 0, str(out), **PROBE)
    return out, report, time.perf_counter() - start


def test_the_probe_writes_the_groups_file_report_and_heat_map(probe_report):
    out, report, wall = probe_report
    assert report["tasks"] == PROBE_TASKS
    affinity = np.array(report["affinity"])
    assert affinity.shape == (4, 4) and np.all(np.isfinite(affinity))
    assert np.array(report["routing_similarity"]).shape == (4, 4)
    assert report["lookahead_steps"] == [2, 4]
    assert 0 < report["lookahead_seconds"] < report["cost_seconds"] <= wall
    assert report["n_train"] == {t: n for t, n in report["n_train"].items() if t in PROBE_TASKS} and all(
        n > 0 for n in report["n_train"].values())
    groups = json.loads((out / "advised_groups.json").read_text())
    assert groups == report["groups"] and report["groups_file"] == str(out / "advised_groups.json")
    listed = [t for members in groups.values() for t in members]
    assert sorted(listed) == sorted(PROBE_TASKS), "every task in exactly one group"
    saved = json.loads((out / "advice.json").read_text())
    assert saved["affinity"] == report["affinity"] and saved["settings"]["probe_steps"] == 4
    assert (out / "affinity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_probe_is_deterministic_under_a_seed(probe_report, tmp_path):
    _, first, _ = probe_report
    again = advise.advise("synthetic", PROBE_TASKS, 0, str(tmp_path), **PROBE)
    np.testing.assert_allclose(again["affinity"], first["affinity"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(again["routing_similarity"], first["routing_similarity"], rtol=1e-5, atol=1e-7)
    assert again["groups"] == first["groups"]


def test_the_groups_file_round_trips_through_m2dino_train(probe_report, tmp_path):
    _, report, _ = probe_report
    results = train.main(["--paradigm", "cg", "--groups", report["groups_file"], "--tasks", *PROBE_TASKS,
                          "--data", "synthetic", "--max_steps", "1", "--output_dir", str(tmp_path), "--preset", "tiny",
                          "--image_size", "32", "--synthetic_scale", "0.02", "--per_device_train_batch_size", "4",
                          "--dataloader_num_workers", "0", "--eval_examples_per_task", "2", "--disable_tqdm", "true"])
    assert {name: sorted(r["tasks"]) for name, r in results.items()} == {
        name: sorted(members) for name, members in report["groups"].items()}


def test_unknown_probe_settings_and_tasks_are_named(tmp_path):
    with pytest.raises(TypeError, match=r"unknown probe setting\(s\) \['probe_stepz'\]"):
        advise.advise("synthetic", PROBE_TASKS, 0, str(tmp_path), probe_stepz=3)
    with pytest.raises(ValueError, match="lookahead_every .* exceeds probe_steps"):
        advise.advise("synthetic", PROBE_TASKS, 0, str(tmp_path), probe_steps=2, lookahead_every=5)
    with pytest.raises(ValueError, match="lookahead_step_scale must be > 0, got 0"):
        advise.advise("synthetic", PROBE_TASKS, 0, str(tmp_path), lookahead_step_scale=0)
    with pytest.raises(SystemExit, match=r"unknown task\(s\) \['nope'\]; valid: FUGC, .*, fetal_head_circumference"):
        advise.main(["--tasks", "lung", "nope", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['nope'\]"):  # the library function checks, not the CLI
        advise.advise("synthetic", ["lung", "nope"], 0, str(tmp_path), **PROBE)


@pytest.mark.parametrize("router_mode", ["task", "token"])
def test_routing_similarity_is_a_cosine_matrix_of_the_tasks_in_order(router_mode):
    from m2dino_training.data.synthetic import SyntheticUltrasoundSuite

    model, _ = twin_model_and_batch()
    if router_mode == "token":
        tasks = [t.to_dict() for t in m2dino.FMC_UIA_TASKS if t.id in TWINS + ["cervix_multi"]]
        model = m2dino.M2DinoForMultiTask(tiny_config(tasks=tasks, default_task="breast_2cls", router_mode="token"))
    processor = m2dino.M2DinoImageProcessor.from_config(model.config)
    source = SyntheticUltrasoundSuite(scale=0.05, image_size=32, seed=0, tasks=TWINS + ["cervix_multi"]).dataset("train")
    order = ["cervix_multi", "breast_2cls", "lung_2cls"]
    similarity = advise.routing_similarity(model, processor, source, order, seed=0)
    assert similarity.shape == (3, 3)
    np.testing.assert_allclose(similarity, similarity.T, atol=1e-6)
    np.testing.assert_allclose(np.diagonal(similarity), 1.0, atol=1e-5)
    assert np.all(similarity <= 1 + 1e-5) and np.all(similarity >= 0)  # gate vectors are non-negative
    if router_mode == "task":  # the twins share their router rows, so they route identically
        assert similarity[1, 2] == pytest.approx(1.0, abs=1e-5)
        assert similarity[0, 1] < 1 - 1e-3


def test_the_groups_file_passes_the_groups_parser_that_m2dino_experiment_shares(probe_report):
    # m2dino-experiment plans its grouped models with train.plan_runs, the parser of m2dino-train --groups.
    _, report, _ = probe_report
    from m2dino_training.experiment import models_of

    assert dict(models_of("advised", PROBE_TASKS, report["groups_file"])) == report["groups"]
