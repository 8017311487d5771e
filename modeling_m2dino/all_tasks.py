"""The all-task fast path: every image of a batch under every task, sharing the part of the encoder that does not
depend on the task (`M2DinoModel.encode_all_tasks`, `M2DinoForMultiTask.predict_all_tasks`)."""

import torch


@torch.no_grad()
def encode_all_tasks(model, pixel_values: torch.Tensor, task_ids: torch.LongTensor, max_images: int = 32):
    """`model.spatial_features` (final tokens, feature map, feature levels) of every image of the checked
    `pixel_values` for every task in `task_ids`, task-major: (len(task_ids) * batch, ...).

    Equal to calling the model once per task, but the layers before the first MoE layer and the first MoE layer's
    attention and experts (whose input does not depend on the task) run once for the whole batch; only later
    layers run per task, on at most `max_images` images (a few tasks) at a time: the same result, with tensors
    small enough for the allocator to reuse (glibc maps every block above 32 MB afresh and page-faults it in again
    on each use).
    """
    batch_size, _, height, width = pixel_values.shape
    first_moe = model.config.moe_layers[0]
    hidden_states = model.embeddings(pixel_values)
    position_embeddings = model.rope_embeddings(pixel_values)
    shared_levels = []
    for index in range(first_moe):
        hidden_states = model.model.layer[index](hidden_states, position_embeddings)
        if index in model.config.feature_layers:
            shared_levels.append(hidden_states)
    first = model.model.layer[first_moe]
    attended = first.attend(hidden_states, position_embeddings)
    mixed_all = first.mlp.forward_all_tasks(first.norm2(attended), task_ids)  # (tasks, batch, N, C)
    tasks_per_chunk = max(1, max_images // batch_size)
    chunks = []
    for start in range(0, len(task_ids), tasks_per_chunk):
        chunk, mixed = task_ids[start : start + tasks_per_chunk], mixed_all[start : start + tasks_per_chunk]
        hidden_states = (first.drop_path(first.layer_scale2(mixed)) + attended).flatten(0, 1)
        levels = [level.repeat(len(chunk), 1, 1) for level in shared_levels]  # shared levels, one copy per task
        if first_moe in model.config.feature_layers:
            levels.append(hidden_states)
        per_sample_tasks = chunk.repeat_interleave(batch_size)
        for index in range(first_moe + 1, len(model.model.layer)):
            layer = model.model.layer[index]
            hidden_states = layer(hidden_states, position_embeddings, per_sample_tasks)
            if index in model.config.feature_layers:
                levels.append(hidden_states)
        chunks.append(model.spatial_features(hidden_states, levels, (height, width)))
    sequence_output = torch.cat([c[0] for c in chunks])
    feature_maps = tuple(torch.cat(maps) for maps in zip(*(c[2] for c in chunks)))
    return sequence_output, torch.cat([c[1] for c in chunks]), feature_maps


__all__ = ["encode_all_tasks"]
