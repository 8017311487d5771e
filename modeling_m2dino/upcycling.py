"""Upcycling a DINOv3 ViT checkpoint into M2DINO: reading it and mapping its weights (`from_dinov3` uses this).

The backbone weights map one to one; the dense MLP of every MoE layer becomes each of its experts. Every M2DINO
backbone weight must come from the checkpoint with the right shape, or this fails naming the keys: loading a
DINOv3 checkpoint into a class outside transformers would leave them random and only log it.
"""

import json
import os
import re

from safetensors.torch import load_file

# Fields of a DINOv3 config.json that describe the backbone (the rest is bookkeeping or backbone-API output).
_NOT_BACKBONE = {"architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "stage_names",
                 "out_features", "out_indices", "_name_or_path", "auto_map"}
# pos_embed_rescale is a pretraining augmentation M2DINO turns off by default (see M2DinoConfig).
_KEEP_M2DINO_DEFAULT = {"pos_embed_rescale"}
_LAYER_KEY = re.compile(r"^(?:model\.)?layer\.(\d+)\.(.*)$")


def read_dinov3_checkpoint(path: str) -> tuple[dict, dict]:
    """The config dict and the state dict of a DINOv3 folder in transformers format."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{path} is not a DINOv3 checkpoint folder: {config_file} is missing")
    with open(config_file, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") not in ("dinov3_vit", None):
        raise ValueError(f"{config_file}: model_type is {config.get('model_type')!r}, expected 'dinov3_vit'")
    weight_files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not weight_files:
        raise FileNotFoundError(f"{path} holds no .safetensors weights (only safetensors is read, never pickles)")
    state = {}
    for name in weight_files:
        state.update(load_file(os.path.join(path, name)))
    return config, state


def backbone_fields(dinov3_config: dict) -> dict:
    """The fields of a DINOv3 config dict that an M2DINO config takes over."""
    return {k: v for k, v in dinov3_config.items() if k not in _NOT_BACKBONE | _KEEP_M2DINO_DEFAULT}


def dinov3_key_to_m2dino(key: str, moe_layers, num_experts: int) -> list[str]:
    """The M2DINO backbone key(s) a DINOv3 key fills: MLP weights of a MoE layer fill every expert."""
    for prefix in ("dinov3.", "backbone.", "model.model.", "m2dino."):
        if key.startswith(prefix) and not key.startswith("model.layer."):
            key = key[len(prefix):] if prefix != "model.model." else "model." + key[len(prefix):]
    match = _LAYER_KEY.match(key)
    if not match:
        return [key]
    layer, rest = int(match.group(1)), match.group(2)
    if layer in moe_layers and rest.startswith("mlp."):
        return [f"model.layer.{layer}.mlp.experts.{e}.{rest[len('mlp.'):]}" for e in range(num_experts)]
    return [f"model.layer.{layer}.{rest}"]


def upcycled_state(path: str, dinov3_state: dict, expected_shapes: dict, config) -> dict:
    """The M2DINO backbone state dict from a DINOv3 one. `expected_shapes` (key -> shape) lists every backbone
    weight the checkpoint must fill (all but the routers); a missing, mis-shaped or unused key is an error."""
    state, unused = {}, []
    for key, tensor in dinov3_state.items():
        targets = [t for t in dinov3_key_to_m2dino(key, set(config.moe_layers), config.num_experts) if t in expected_shapes]
        if not targets:
            unused.append(key)
        for target in targets:
            state[target] = tensor
    missing = sorted(k for k in expected_shapes if k not in state)
    misshaped = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected_shapes[k])}"
        for k in state
        if tuple(state[k].shape) != tuple(expected_shapes[k])
    )
    if missing or misshaped:
        raise ValueError(
            f"cannot upcycle {path}: {len(missing)} backbone weight(s) missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}; {len(misshaped)} mis-shaped {misshaped[:10]}. "
            f"Check that the config overrides match the checkpoint. Unused checkpoint keys: {unused[:10]}"
        )
    if unused:
        raise ValueError(f"cannot upcycle {path}: checkpoint keys with no place in M2DINO: {unused[:10]}")
    return state


__all__ = ["backbone_fields", "dinov3_key_to_m2dino", "read_dinov3_checkpoint", "upcycled_state"]
